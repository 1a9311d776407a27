-- SMS segments and encoding (issue 16, item 4).

-- How an SMS's text travels ('GSM-7' or 'UCS-2') and how many segments it is sent and billed
-- as; set when the row is written and whenever its body changes (a moved reminder). NULL for
-- email and webhooks, and for SMS written before this migration (the API measures their body).
ALTER TABLE messages ADD COLUMN encoding text, ADD COLUMN segments smallint;

-- A phone a carrier reported unreachable (issue 16, item 5).

-- 'unreachable' once Twilio answered a send to it, or reported on one, with a code that means
-- the number cannot receive texts (21211, 21612, 21614, 21635, 30005, 30006); SMS to it are then
-- suppressed until the contact's phone is changed, which sets it back to 'ok'.
ALTER TABLE contacts ADD COLUMN phone_status text NOT NULL DEFAULT 'ok';

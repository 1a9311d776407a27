-- Zero duplicates after a crash (issue 14).

-- When an attempt whose outcome Herald never recorded began (its worker died mid-call, or the
-- outcome could not be written): until the provider has said whether that attempt arrived,
-- the message is not sent again. Cleared once an outcome is recorded.
ALTER TABLE messages ADD COLUMN unsettled_since timestamptz;

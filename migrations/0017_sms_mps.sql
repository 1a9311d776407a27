-- A tenant's SMS pace in segments per second, over the one its sender's class gives (issue 16, item 1).
ALTER TABLE tenants ADD COLUMN sms_mps double precision CHECK (sms_mps > 0 AND sms_mps <= 10000);

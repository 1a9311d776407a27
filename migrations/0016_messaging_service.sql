-- A tenant may send SMS through a Twilio Messaging Service instead of one number (issue 16, item 1).
ALTER TABLE tenants ADD COLUMN messaging_service_sid text;

-- The API's live stream (api/live_hub.py, issue 13): a NOTIFY when alarm journal rows are added
-- or latest values change, so each API process's one listener wakes and reads what is new.
-- Statement-level and payload-free on purpose: PostgreSQL folds identical notifications of one
-- transaction into one, so a writer's transaction costs one NOTIFY whatever it holds (the
-- historian's hot path upserts thousands of tag_latest rows per statement). The listener reads
-- by position (alarm_journal (seq, n)) and by diff (tag_latest), so it needs no payload.

CREATE FUNCTION hw_stream_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END $$;

CREATE TRIGGER alarm_journal_stream AFTER INSERT ON alarm_journal
    FOR EACH STATEMENT EXECUTE FUNCTION hw_stream_notify('alarm_journal');

CREATE TRIGGER tag_latest_stream AFTER INSERT OR UPDATE ON tag_latest
    FOR EACH STATEMENT EXECUTE FUNCTION hw_stream_notify('tag_latest');

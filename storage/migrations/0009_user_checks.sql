-- A blank enterprise or county is not a binding (review F1): the API's scope treats '' as a real
-- value matching nothing, but code that drops falsy filters read it as "no filter" (every
-- enterprise). api.users refuses blanks; these checks keep them out of the table whatever writes.
-- Existing blank rows stop the upgrade, naming the users: widening them to NULL (the city bureau,
-- a plant-wide engineer) or disabling them is an access decision for a person, not a migration.

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(username, ', ' ORDER BY username) INTO bad
    FROM app_user WHERE enterprise = '' OR county = '';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'app_user rows with a blank enterprise or county: %', bad
            USING HINT = 'set each to a real code, or to NULL where the wider scope is intended '
                         '(UPDATE app_user SET enterprise = ... WHERE username = ...), then upgrade again';
    END IF;
END
$$;

ALTER TABLE app_user
    ADD CONSTRAINT app_user_enterprise_not_blank CHECK (enterprise IS NULL OR enterprise <> ''),
    ADD CONSTRAINT app_user_county_not_blank CHECK (county IS NULL OR county <> '');

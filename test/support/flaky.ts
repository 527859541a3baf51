/**
 * `flaky(fail_until)`: a SQL function that raises a serialization failure (40001, which the package
 * retries) on its first `fail_until` calls since `ALTER SEQUENCE flaky_seq RESTART`, then returns the call
 * number. `flaky_seq`'s `last_value` says how many times the statement really ran on the server.
 */
export const FLAKY_SQL = `
  CREATE SEQUENCE flaky_seq;
  CREATE FUNCTION flaky(fail_until int) RETURNS int LANGUAGE plpgsql AS $$
    DECLARE n int := nextval('flaky_seq');
    BEGIN
      IF n <= fail_until THEN
        RAISE EXCEPTION 'simulated serialization failure %', n USING ERRCODE = '40001';
      END IF;
      RETURN n;
    END $$;
`;

-- The trigrams of a text, for the text search's own index where pg_trgm cannot be had: each run
-- of three characters of the text as given (the caller lowers it), as one number made of their
-- three code points (21 bits each: exact, and compared without a collation). A text holds a
-- search's text only if it holds all of that text's trigrams, so `@>` on a GIN index of these
-- arrays (built in, no extension) narrows a search to its candidates, and ILIKE checks each one.
-- PL/pgSQL: the cheapest built-in way to build the array (a few microseconds a run; GIN drops
-- the repeats). Only pg_catalog is used: an index expression may run under any search_path.
CREATE FUNCTION taskd_trigrams(body text) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    grams bigint[] := '{}';
    first bigint;
    second bigint;
    third bigint;
BEGIN
    IF pg_catalog.length(body) < 3 THEN
        RETURN grams;
    END IF;
    first := pg_catalog.ascii(pg_catalog.substr(body, 1, 1));
    second := pg_catalog.ascii(pg_catalog.substr(body, 2, 1));
    FOR i IN 3 .. pg_catalog.length(body) LOOP
        third := pg_catalog.ascii(pg_catalog.substr(body, i, 1));
        grams := grams || ((first << 42) | (second << 21) | third);
        first := second;
        second := third;
    END LOOP;
    RETURN grams;
END
$$;

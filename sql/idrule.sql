--
-- idrule: record id = first 32 hex digits of sha256(partition::source_id::model_name)
--
-- Morango's own test vector: sha2_uuid("", "Fac 0", "facility")
SELECT morango.record_id('', 'Fac 0', 'facility') = 'd4c3f5f7287ece80fff143b43b16d521'::uuid AS morango_vector;
-- the same rule computed in SQL
SELECT morango.record_id(p, s, m) =
       substr(encode(sha256(convert_to(p || '::' || s || '::' || m, 'UTF8')), 'hex'), 1, 32)::uuid AS matches
FROM (VALUES ('f1:user', '42', 'user'), ('', '', 'x'), ('école:ü', 'ß', 'modèle'),
             (repeat('p', 1000), 'src', 'model')) AS v(p, s, m);
-- the rule hashes the joined string, as Morango does: equal joins give equal ids
SELECT morango.record_id('a', 'b::c', 'm') = morango.record_id('a::b', 'c', 'm') AS same_string_same_id;
-- strict: NULL in, NULL out
SELECT morango.record_id(NULL, 'x', 'y') IS NULL AS null_in_null_out;

/*-------------------------------------------------------------------------
 *
 * certify.c
 *		The client side of a certificate signing request: ask a peer over
 *		libpq to sign a certificate for our public key.
 *
 * morango.request_certificate() (SQL) makes the key pair, calls this, and
 * verifies and stores what comes back; the private key never leaves this
 * database.  The peer decides by the role we connect as
 * (morango.peer_certificate_sign).  The call is a plain SELECT
 * morango.peer_certificate_sign(...) with parameters, the only form the
 * peer's guard takes from a role that is not a superuser (src/peer.c).
 *
 * IDENTIFICATION
 *		src/certify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "morango.h"
#include "transport.h"

PG_FUNCTION_INFO_V1(morango_peer_request_signature);

/*
 * morango.peer_request_signature(peer, parent, scope_definition, params,
 *                                public_key) -> jsonb
 *
 * Runs peer_certificate_sign on the peer and returns the chain it answers,
 * unchecked (the caller verifies it).  Errors of the peer are raised here
 * with their SQLSTATE and message.
 */
Datum
morango_peer_request_signature(PG_FUNCTION_ARGS)
{
	char	   *peer = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *values[4];
	char	   *scope;
	char	   *params;
	PGconn	   *volatile conn = NULL;
	PGresult   *volatile res = NULL;
	char	   *chain = NULL;

	values[0] = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1)));
	scope = text_to_cstring(PG_GETARG_TEXT_PP(2));
	params = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(3)));
	/* the wire is UTF8 (transport.h) */
	values[1] = pg_server_to_any(scope, strlen(scope), PG_UTF8);
	values[2] = pg_server_to_any(params, strlen(params), PG_UTF8);
	values[3] = text_to_cstring(PG_GETARG_TEXT_PP(4));

	PG_TRY();
	{
		conn = morango_peer_connect(peer, "morango certificate request",
									morango_connect_timeout);
		res = morango_peer_exec(conn,
								"SELECT morango.peer_certificate_sign($1::uuid, $2, $3::jsonb, $4)",
								4, NULL, values, morango_peer_timeout);
		if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("the peer answered a certificate request with no chain")));
		chain = pstrdup(PQgetvalue(res, 0, 0));
	}
	PG_FINALLY();
	{
		if (res)
			PQclear(res);
		if (conn)
			morango_peer_disconnect(conn);
	}
	PG_END_TRY();

	chain = pg_any_to_server(chain, strlen(chain), PG_UTF8);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(chain)));
}

/*-------------------------------------------------------------------------
 *
 * peer.c
 *		Helpers of the peer API (the morango.peer_* functions a peer calls,
 *		doc/protocol.md): who is calling.
 *
 * The peer API functions are SECURITY DEFINER, so inside them current_user
 * is the extension's owner and session_user the role that logged in.  The
 * role a call acts for is the one outside every security definer function:
 * the login role, or the role it switched to with SET ROLE.
 *
 * IDENTIFICATION
 *		src/peer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_peer_role);

/*
 * morango.peer_role() -> name
 *		The role the current peer API call acts for (GetOuterUserId(): SET
 *		ROLE counts, SECURITY DEFINER does not).  Sessions, transfers and
 *		signing grants belong to this role.
 */
Datum
morango_peer_role(PG_FUNCTION_ARGS)
{
	char	   *name = GetUserNameFromId(GetOuterUserId(), false);

	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(name)));
}

/*-------------------------------------------------------------------------
 *
 * transport.c
 *		The libpq transport of a sync: connect to a peer database, run one
 *		parameterised statement there, disconnect; and the foreign-data
 *		wrapper "morango" whose servers and user mappings name peers.
 *
 * Everything here runs inside a backend or a background worker, so no
 * call may block in libpq: connections are started with
 * PQconnectStartParams() and driven with PQconnectPoll(), queries are sent
 * with PQsendQueryParams() on a non-blocking connection, and every wait is
 * a WaitLatchOrSocket() on MyLatch with CHECK_FOR_INTERRUPTS(), so query
 * cancel, statement_timeout, terminate and postmaster death are honoured
 * at once (the libpq-be-fe-helpers.h rules).  Each connection reserves an
 * external file descriptor with fd.c.
 *
 * When a remote call is abandoned, by an interrupt, an error or our own
 * timeout, a cancel request is sent to the peer, so that its backend
 * stops working on a query whose result nobody will read.
 *
 * Remote errors are re-raised here with the peer's SQLSTATE, message,
 * detail, hint and context, plus the first line of the SQL as context
 * (the postgres_fdw pattern).  Nothing this file reports contains a
 * password: peers are shown through morango_peer_display().
 *
 * IDENTIFICATION
 *		src/transport.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "access/reloptions.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_type.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "common/string.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "libpq/libpq-be-fe-helpers.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "transport.h"

PG_FUNCTION_INFO_V1(morango_fdw_validator);
PG_FUNCTION_INFO_V1(morango_peer_query_test);
PG_FUNCTION_INFO_V1(morango_peer_display_test);
PG_FUNCTION_INFO_V1(morango_peer_stats_test);
PG_FUNCTION_INFO_V1(morango_peer_has_secret_sql);

/* name of the foreign-data wrapper whose servers are peers */
#define MORANGO_FDW_NAME			"morango"

/* shown in the peer's pg_stat_activity unless the caller names itself */
#define MORANGO_FALLBACK_APPNAME	"morango"

/*
 * Settings pinned on every peer session, so that values cross the wire in
 * one unambiguous text form and the peer resolves no name through a
 * search_path someone else controls.  Appended after any "options" the
 * peer's definition gives, so these win.
 */
#define MORANGO_SESSION_OPTIONS \
	"-c search_path=pg_catalog -c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3"

/* TCP keepalive defaults, used unless the peer's definition sets them */
#define MORANGO_KEEPALIVES_IDLE		"60"
#define MORANGO_KEEPALIVES_INTERVAL "10"
#define MORANGO_KEEPALIVES_COUNT	"6"

/* after our own timeout cancels a remote call, wait this long for the peer */
#define MORANGO_CANCEL_WAIT_MS		5000

/* longest piece of SQL quoted in an error context */
#define MORANGO_SQL_CONTEXT_LEN		200

MorangoPeerStats morango_peer_stats = {0, 0, 0};

/*
 * libpq connection parameters being assembled: NULL-terminated keyword and
 * value arrays as PQconnectStartParams() takes them, palloc'd.
 */
typedef struct PeerParams
{
	int			n;
	int			max;
	const char **keywords;
	const char **values;
} PeerParams;

/* what a libpq option may be used for in a peer definition */
typedef enum PeerOptionKind
{
	PEER_OPTION_INVALID,		/* unknown, debug-only, a secret other than
								 * the password, or not allowed for
								 * server-side connections */
	PEER_OPTION_SERVER,			/* on the foreign server */
	PEER_OPTION_MAPPING,		/* in the user mapping: user, password */
	PEER_OPTION_RESERVED		/* always set by the transport itself */
} PeerOptionKind;

static void peer_lost(PGconn *conn, const char *sql) pg_attribute_noreturn();
static void peer_report_error(PGconn *conn, PGresult *res, const char *sql) pg_attribute_noreturn();


/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------
 */

/*
 * peer_text
 *		A palloc'd copy of a message that came from libpq or the peer,
 *		without its trailing newline, safe to put into a local error: the
 *		peer speaks UTF8, so in a database of another encoding (or if the
 *		bytes are not valid UTF8) non-ASCII bytes are shown as '?'.
 *		NULL in, NULL out.
 */
static char *
peer_text(const char *msg)
{
	char	   *copy;
	int			enc = GetDatabaseEncoding();

	if (msg == NULL)
		return NULL;
	copy = pchomp(msg);
	if (!pg_is_ascii(copy) &&
		!((enc == PG_UTF8 || enc == PG_SQL_ASCII) &&
		  pg_verify_mbstr(PG_UTF8, copy, strlen(copy), true)))
	{
		for (char *p = copy; *p; p++)
			if (IS_HIGHBIT_SET(*p))
				*p = '?';
	}
	return copy;
}

/*
 * peer_sql_excerpt
 *		The first line of sql, trimmed and cut to MORANGO_SQL_CONTEXT_LEN
 *		bytes, with "..." when anything was left out.  palloc'd.
 */
static char *
peer_sql_excerpt(const char *sql)
{
	const char *start = sql;
	const char *end;
	int			len;
	bool		more;
	char	   *line;

	while (*start && isspace((unsigned char) *start))
		start++;
	end = start;
	while (*end && *end != '\n' && *end != '\r')
		end++;
	len = end - start;
	while (len > 0 && isspace((unsigned char) start[len - 1]))
		len--;
	more = (*end != '\0');
	if (len > MORANGO_SQL_CONTEXT_LEN)
	{
		len = pg_encoding_mbcliplen(PG_UTF8, start, len, MORANGO_SQL_CONTEXT_LEN);
		more = true;
	}
	line = pnstrdup(start, len);
	if (more)
	{
		/* only "..." if something but whitespace follows */
		const char *rest = start + len;

		while (*rest && isspace((unsigned char) *rest))
			rest++;
		if (*rest != '\0')
			line = psprintf("%s ...", line);
	}
	return peer_text(line);
}

/*
 * peer_errcontext
 *		errcontext() naming the remote call; for use inside ereport().
 */
static int
peer_errcontext(const char *sql)
{
	return errcontext("remote call to peer: %s", peer_sql_excerpt(sql));
}

/*
 * peer_params_set / peer_params_get
 *		Set (replace or append) and look up a connection parameter.  The
 *		strings are not copied: they must live as long as the arrays.
 */
static void
peer_params_set(PeerParams *params, const char *keyword, const char *value)
{
	for (int i = 0; i < params->n; i++)
	{
		if (strcmp(params->keywords[i], keyword) == 0)
		{
			params->values[i] = value;
			return;
		}
	}
	if (params->n + 1 >= params->max)
	{
		params->max = Max(params->max * 2, 32);
		if (params->keywords == NULL)
		{
			params->keywords = palloc(params->max * sizeof(char *));
			params->values = palloc(params->max * sizeof(char *));
		}
		else
		{
			params->keywords = repalloc(params->keywords, params->max * sizeof(char *));
			params->values = repalloc(params->values, params->max * sizeof(char *));
		}
	}
	params->keywords[params->n] = keyword;
	params->values[params->n] = value;
	params->n++;
	params->keywords[params->n] = NULL;
	params->values[params->n] = NULL;
}

static const char *
peer_params_get(const PeerParams *params, const char *keyword)
{
	for (int i = 0; i < params->n; i++)
		if (strcmp(params->keywords[i], keyword) == 0)
			return params->values[i];
	return NULL;
}

/*
 * peer_conndefaults
 *		libpq's list of connection options, fetched once per process and
 *		kept (malloc'd by libpq, never freed).
 */
static const PQconninfoOption *
peer_conndefaults(void)
{
	static PQconninfoOption *defaults = NULL;

	if (defaults == NULL)
	{
		defaults = PQconndefaults();
		if (defaults == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not get libpq's default connection options.")));
	}
	return defaults;
}

/*
 * peer_option_kind
 *		Where a libpq option may appear in a peer definition.
 *
 * Debug options (such as "replication") and options PostgreSQL does not
 * allow server-side connections to set are invalid everywhere.  "user"
 * and "password" belong in user mappings, where only their owner and
 * superusers can read them; other secrets (sslpassword) are not
 * supported.  client_encoding and fallback_application_name are the
 * transport's own.  Everything else belongs on the server.
 */
static PeerOptionKind
peer_option_kind(const char *keyword)
{
	const PQconninfoOption *opt;

	for (opt = peer_conndefaults(); opt->keyword != NULL; opt++)
		if (strcmp(opt->keyword, keyword) == 0)
			break;
	if (opt->keyword == NULL)
		return PEER_OPTION_INVALID;
	if (strchr(opt->dispchar, 'D') != NULL)
		return PEER_OPTION_INVALID;
	if (!libpqsrv_is_valid_proxy_option(keyword))
		return PEER_OPTION_INVALID;
	if (strcmp(keyword, "client_encoding") == 0 ||
		strcmp(keyword, "fallback_application_name") == 0)
		return PEER_OPTION_RESERVED;
	if (strcmp(keyword, "user") == 0 || strcmp(keyword, "password") == 0)
		return PEER_OPTION_MAPPING;
	if (strchr(opt->dispchar, '*') != NULL)
		return PEER_OPTION_INVALID;
	return PEER_OPTION_SERVER;
}

/*
 * peer_check_option
 *		Refuse a connection option PostgreSQL does not allow server-side
 *		connections to set (libpqsrv_is_valid_proxy_option), or a debug
 *		option, whichever way the peer was given.
 */
static void
peer_check_option(const char *keyword)
{
	const PQconninfoOption *opt;

	if (!libpqsrv_is_valid_proxy_option(keyword))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set connection option \"%s\"", keyword)));
	for (opt = peer_conndefaults(); opt->keyword != NULL; opt++)
		if (strcmp(opt->keyword, keyword) == 0 && strchr(opt->dispchar, 'D') != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("connection option \"%s\" cannot be used for a peer", keyword)));
}


/* ------------------------------------------------------------------------
 * Naming peers
 * ------------------------------------------------------------------------
 */

/*
 * morango_peer_is_conninfo
 *		True if peer is a libpq connection string (it contains '=' or is a
 *		postgres:// or postgresql:// URI), false if it names a foreign
 *		server.
 */
bool
morango_peer_is_conninfo(const char *peer)
{
	return strchr(peer, '=') != NULL ||
		strncmp(peer, "postgresql://", strlen("postgresql://")) == 0 ||
		strncmp(peer, "postgres://", strlen("postgres://")) == 0;
}

/*
 * append_conninfo_value
 *		Append a value to a keyword=value connection string, quoted when
 *		libpq needs it to be (or when an '=' would make it hard to read).
 */
static void
append_conninfo_value(StringInfo buf, const char *value)
{
	bool		quote = (value[0] == '\0');

	for (const char *p = value; *p && !quote; p++)
		if (isspace((unsigned char) *p) || *p == '\'' || *p == '\\' || *p == '=')
			quote = true;
	if (!quote)
	{
		appendStringInfoString(buf, value);
		return;
	}
	appendStringInfoChar(buf, '\'');
	for (const char *p = value; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/*
 * morango_peer_display
 *		A palloc'd form of peer that is safe to store, log and show: a
 *		server name as it is; a connection string re-serialised as
 *		keyword=value pairs (in libpq's option order) without the password
 *		or any other secret option.  A connection string libpq cannot
 *		parse is shown as "(invalid connection string)", since we cannot
 *		tell where its password is.  Never throws except out of memory.
 */
char *
morango_peer_display(const char *peer)
{
	PQconninfoOption *volatile opts;
	char	   *parse_error = NULL;
	StringInfoData buf;

	if (!morango_peer_is_conninfo(peer))
		return pstrdup(peer);

	opts = PQconninfoParse(peer, &parse_error);
	if (parse_error != NULL)
		PQfreemem(parse_error);
	if (opts == NULL)
		return pstrdup("(invalid connection string)");

	initStringInfo(&buf);
	PG_TRY();
	{
		for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
		{
			if (opt->val == NULL || strchr(opt->dispchar, '*') != NULL)
				continue;
			if (buf.len > 0)
				appendStringInfoChar(&buf, ' ');
			appendStringInfo(&buf, "%s=", opt->keyword);
			/* a dbname may itself be a connection string, with a password */
			if (strcmp(opt->keyword, "dbname") == 0 && morango_peer_is_conninfo(opt->val))
				append_conninfo_value(&buf, morango_peer_display(opt->val));
			else
				append_conninfo_value(&buf, opt->val);
		}
	}
	PG_FINALLY();
	{
		PQconninfoFree(opts);
	}
	PG_END_TRY();
	return buf.data;
}

/*
 * peer_parse_conninfo
 *		PQconninfoParse() of a connection string (keyword=value or URI), or
 *		an error that does not show the string.  The caller frees the result
 *		with PQconninfoFree().
 */
static PQconninfoOption *
peer_parse_conninfo(const char *peer)
{
	PQconninfoOption *opts;
	char	   *parse_error = NULL;

	opts = PQconninfoParse(peer, &parse_error);
	if (opts == NULL)
	{
		char	   *detail = NULL;

		/*
		 * libpq's parse errors quote the text near the problem, which may
		 * be part of a password: show them only if no password can be in
		 * the string.
		 */
		if (parse_error != NULL && strstr(peer, "password") == NULL &&
			strstr(peer, "://") == NULL)
			detail = peer_text(parse_error);
		if (parse_error != NULL)
			PQfreemem(parse_error);
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("invalid connection string for peer"),
				 detail ? errdetail_internal("%s", detail) :
				 errdetail("The connection string could not be parsed; the reason is not shown because the string may contain a password."),
				 errhint("Give keyword=value pairs or a postgres:// URI, or the name of a foreign server of FOREIGN DATA WRAPPER morango.")));
	}
	return opts;
}

/*
 * morango_peer_has_secret
 *		Does the peer, a connection string, set a password or another
 *		secret option (sslpassword; libpq marks them '*'), in any form
 *		libpq reads: keyword=value, a URI's user:password@ or
 *		?password= (percent-encoded or not), or inside a dbname that is
 *		itself a connection string (which libpq expands)?  False for a
 *		foreign server name.  An empty password is no secret.  Raises, not
 *		showing the string, if libpq cannot parse it.  passfile is not a
 *		secret: it names a file of the server's operating system user, and
 *		the transport lets only superusers connect without a password.
 */
bool
morango_peer_has_secret(const char *peer)
{
	PQconninfoOption *volatile opts;
	volatile bool found = false;

	if (!morango_peer_is_conninfo(peer))
		return false;
	opts = peer_parse_conninfo(peer);
	PG_TRY();
	{
		for (PQconninfoOption *opt = opts; opt->keyword != NULL && !found; opt++)
		{
			if (opt->val == NULL || opt->val[0] == '\0')
				continue;
			if (strchr(opt->dispchar, '*') != NULL)
				found = true;
			else if (strcmp(opt->keyword, "dbname") == 0 && morango_peer_is_conninfo(opt->val))
				found = morango_peer_has_secret(opt->val);
		}
	}
	PG_FINALLY();
	{
		PQconninfoFree(opts);
	}
	PG_END_TRY();
	return found;
}

/*
 * peer_params_from_conninfo
 *		Connection parameters from a connection string (keyword=value or
 *		URI).  Only what the string sets is taken; libpq applies its own
 *		defaults (environment, service file) at connect time.
 */
static void
peer_params_from_conninfo(const char *peer, PeerParams *params)
{
	PQconninfoOption *volatile opts = peer_parse_conninfo(peer);

	PG_TRY();
	{
		for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
		{
			if (opt->val == NULL)
				continue;
			peer_check_option(opt->keyword);
			peer_params_set(params, pstrdup(opt->keyword), pstrdup(opt->val));
		}
	}
	PG_FINALLY();
	{
		PQconninfoFree(opts);
	}
	PG_END_TRY();
}

/*
 * peer_params_from_server
 *		Connection parameters of a foreign server of FDW morango and the
 *		current user's user mapping for it (or the PUBLIC one), like
 *		dblink_connect() with a server name.  The current user needs USAGE
 *		on the server.  Must run in a transaction (catalog lookups).
 */
static void
peer_params_from_server(const char *name, PeerParams *params)
{
	ForeignServer *server;
	ForeignDataWrapper *fdw;
	UserMapping *mapping;
	Oid			userid = GetUserId();
	AclResult	aclresult;
	ListCell   *lc;

	server = GetForeignServerByName(name, true);
	if (server == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("peer \"%s\" does not exist", name),
				 errhint("A peer is a connection string, or the name of a server made with CREATE SERVER %s FOREIGN DATA WRAPPER morango OPTIONS (host '...', dbname '...') and a user mapping.",
						 quote_identifier(name))));

	fdw = GetForeignDataWrapper(server->fdwid);
	if (strcmp(fdw->fdwname, MORANGO_FDW_NAME) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("foreign server \"%s\" is not a morango peer", name),
				 errdetail("It belongs to foreign-data wrapper \"%s\".", fdw->fdwname),
				 errhint("Peers are servers of FOREIGN DATA WRAPPER morango.")));

	aclresult = pg_foreign_server_aclcheck(server->serverid, userid, ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FOREIGN_SERVER, server->servername);

	if (!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(userid),
							   ObjectIdGetDatum(server->serverid)) &&
		!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
							   ObjectIdGetDatum(server->serverid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("user mapping not found for user \"%s\" on peer \"%s\"",
						GetUserNameFromId(userid, false), name),
				 errhint("Create one with CREATE USER MAPPING FOR ... SERVER %s OPTIONS (user '...', password '...').",
						 quote_identifier(name))));
	mapping = GetUserMapping(userid, server->serverid);

	foreach(lc, server->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		peer_check_option(def->defname);
		peer_params_set(params, def->defname, defGetString(def));
	}
	foreach(lc, mapping->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		peer_check_option(def->defname);
		peer_params_set(params, def->defname, defGetString(def));
	}
}

/*
 * peer_build_params
 *		All connection parameters for peer: its own, then the pinned
 *		session settings, client_encoding UTF8, the application name and
 *		keepalive defaults.  Refuses a non-superuser who brings no password
 *		(they must not use the local server's .pgpass, environment or
 *		trust entries).
 */
static void
peer_build_params(const char *peer, const char *application_name, PeerParams *params)
{
	bool		from_conninfo = morango_peer_is_conninfo(peer);
	const char *password;
	const char *options;

	if (from_conninfo)
		peer_params_from_conninfo(peer, params);
	else
		peer_params_from_server(peer, params);

	password = peer_params_get(params, "password");
	if ((password == NULL || password[0] == '\0') && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 from_conninfo ?
				 errdetail("Non-superusers must give a password in the connection string.") :
				 errdetail("Non-superusers must have a password in their user mapping for the peer."),
				 errhint("Add a password, or connect as a superuser.")));

	options = peer_params_get(params, "options");
	if (options != NULL && options[0] != '\0')
		peer_params_set(params, "options", psprintf("%s %s", options, MORANGO_SESSION_OPTIONS));
	else
		peer_params_set(params, "options", MORANGO_SESSION_OPTIONS);
	peer_params_set(params, "client_encoding", "UTF8");
	peer_params_set(params, "fallback_application_name", MORANGO_FALLBACK_APPNAME);
	if (application_name != NULL)
		peer_params_set(params, "application_name", application_name);
	if (peer_params_get(params, "keepalives_idle") == NULL)
		peer_params_set(params, "keepalives_idle", MORANGO_KEEPALIVES_IDLE);
	if (peer_params_get(params, "keepalives_interval") == NULL)
		peer_params_set(params, "keepalives_interval", MORANGO_KEEPALIVES_INTERVAL);
	if (peer_params_get(params, "keepalives_count") == NULL)
		peer_params_set(params, "keepalives_count", MORANGO_KEEPALIVES_COUNT);
}


/* ------------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------------
 */

/*
 * peer_notice_receiver
 *		libpq notice receiver: NOTICEs and the like from the peer go to the
 *		server log, WARNINGs at LOG, the rest at DEBUG1, instead of to the
 *		server's stderr.
 */
static void
peer_notice_receiver(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	int			elevel = DEBUG1;

	if (severity != NULL && strcmp(severity, "WARNING") == 0)
		elevel = LOG;
	if (message_level_is_interesting(elevel))
		ereport(elevel,
				(errmsg_internal("message from peer: %s",
								 peer_text(PQresultErrorMessage(res)))));
}

/*
 * peer_wait_socket
 *		Wait until conn's socket is ready for one of io_events
 *		(WL_SOCKET_*), the latch is set (then process interrupts, which may
 *		throw) or deadline (0: none) passes.  Returns WaitLatchOrSocket()'s
 *		result, or 0 if the deadline has passed.
 */
static int
peer_wait_socket(PGconn *conn, int io_events, TimestampTz deadline)
{
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | io_events;
	long		timeout = -1;
	int			rc;

	if (deadline != 0)
	{
		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (timeout <= 0)
			return 0;
		events |= WL_TIMEOUT;
	}
	rc = WaitLatchOrSocket(MyLatch, events, PQsocket(conn), timeout, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return rc;
}

/*
 * peer_connect_wait
 *		Drive PQconnectPoll() until the connection is made or has failed,
 *		waiting on the socket and our latch.  Throws on interrupt and when
 *		deadline (0 = none) passes; the caller frees conn.
 */
static void
peer_connect_wait(PGconn *conn, const char *display, TimestampTz deadline, int timeout_s)
{
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
	{
		int			io_flag;
		int			rc;

		if (status == PGRES_POLLING_READING)
			io_flag = WL_SOCKET_READABLE;
#ifdef WIN32
		else if (PQstatus(conn) == CONNECTION_STARTED)
			io_flag = WL_SOCKET_CONNECTED;
#endif
		else
			io_flag = WL_SOCKET_WRITEABLE;

		rc = peer_wait_socket(conn, io_flag, deadline);
		if (rc == 0)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to peer \"%s\"", display),
					 errdetail_plural("The connection attempt timed out after %d second.",
									  "The connection attempt timed out after %d seconds.",
									  timeout_s, timeout_s)));
		if (rc & io_flag)
			status = PQconnectPoll(conn);
	}
}

/*
 * morango_peer_connect
 *		Open a connection to peer: a libpq connection string or the name of
 *		a foreign server of FDW morango (see peer_params_from_server).
 *
 * application_name (may be NULL) is what the peer's pg_stat_activity
 * shows; it overrides one in the peer's definition, and "morango" is the
 * fallback.  The session is pinned to search_path=pg_catalog, ISO dates,
 * postgres intervals, extra_float_digits=3 and client_encoding UTF8 (any
 * "options" of the peer's definition come first, ours win).
 * connect_timeout_s > 0 bounds the whole attempt; 0 means the peer's own
 * connect_timeout option if it has one, else no limit.
 *
 * Interruptible.  A non-superuser must give a password and the peer must
 * ask for it.  Must be called in a transaction (superuser() and server
 * names read the catalog); the connection itself outlives it.  Throws on
 * any failure, without leaking the connection.  The caller owns the
 * result and must morango_peer_disconnect() it, also on error paths.
 */
PGconn *
morango_peer_connect(const char *peer, const char *application_name, int connect_timeout_s)
{
	PeerParams	params = {0};
	char	   *display;
	volatile int timeout_s = connect_timeout_s;
	volatile TimestampTz deadline = 0;
	PGconn	   *volatile conn = NULL;

	Assert(peer != NULL);
	display = morango_peer_display(peer);
	peer_build_params(peer, application_name, &params);

	if (timeout_s <= 0)
	{
		const char *option = peer_params_get(&params, "connect_timeout");
		char	   *end;
		long		value;

		if (option != NULL)
		{
			errno = 0;
			value = strtol(option, &end, 10);
			if (errno == 0 && *end == '\0' && value > 0 && value <= INT_MAX / 1000)
				timeout_s = Max((int) value, 2);	/* libpq's minimum */
		}
	}
	if (timeout_s > 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   (int64) timeout_s * 1000);

	/* a PGconn holds one long-lived socket: obey fd.c's limit */
	if (!AcquireExternalFD())
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to peer \"%s\"", display),
				 errdetail("There are too many open files on the local server."),
				 errhint("Raise the server's max_files_per_process and/or \"ulimit -n\" limits.")));

	PG_TRY();
	{
		conn = PQconnectStartParams(params.keywords, params.values, 0);
		if (conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not allocate a connection to peer \"%s\".", display)));
		if (PQstatus(conn) != CONNECTION_BAD)
			peer_connect_wait(conn, display, deadline, timeout_s);
		if (PQstatus(conn) != CONNECTION_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to peer \"%s\"", display),
					 errdetail_internal("%s", peer_text(PQerrorMessage(conn)))));

		/* like dblink: no borrowing the local server's trust or .pgpass */
		if (!PQconnectionUsedPassword(conn) && !superuser())
			ereport(ERROR,
					(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
					 errmsg("password is required"),
					 errdetail("The peer did not ask for the password; only superusers may connect to a peer without password authentication."),
					 errhint("Make the peer's pg_hba.conf require password authentication (such as scram-sha-256) for this connection.")));

		if (PQsetnonblocking(conn, 1) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to peer \"%s\"", display),
					 errdetail_internal("%s", peer_text(PQerrorMessage(conn)))));
		PQsetNoticeReceiver(conn, peer_notice_receiver, NULL);
	}
	PG_CATCH();
	{
		if (conn != NULL)
			PQfinish(conn);
		ReleaseExternalFD();
		PG_RE_THROW();
	}
	PG_END_TRY();

	return conn;
}


/* ------------------------------------------------------------------------
 * Remote calls
 * ------------------------------------------------------------------------
 */

/*
 * peer_send_cancel
 *		Ask the peer to cancel the query running on conn, if one is.
 *		Returns true if a cancel request was delivered.  Never throws
 *		(failures are WARNINGs), so it is safe in error cleanup.  PQcancel
 *		blocks while it connects to the peer's postmaster; libpq 15 offers
 *		nothing better.
 */
static bool
peer_send_cancel(PGconn *conn)
{
	PGcancel   *cancel;
	char		errbuf[256];
	bool		sent;

	if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_ACTIVE)
		return false;
	cancel = PQgetCancel(conn);
	if (cancel == NULL)
		return false;
	sent = PQcancel(cancel, errbuf, sizeof(errbuf)) != 0;
	PQfreeCancel(cancel);
	if (!sent)
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send cancel request to peer"),
				 errdetail_internal("%s", errbuf)));
	return sent;
}

/*
 * peer_cancel_callback
 *		pg_on_exit_callback for PG_ENSURE_ERROR_CLEANUP: cancel the remote
 *		query when we leave the wait by an ERROR or a FATAL exit.
 */
static void
peer_cancel_callback(int code, Datum arg)
{
	peer_send_cancel((PGconn *) DatumGetPointer(arg));
}

/*
 * peer_lost
 *		Report a connection that broke during a remote call.
 */
static void
peer_lost(PGconn *conn, const char *sql)
{
	char	   *detail = peer_text(PQerrorMessage(conn));

	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("lost connection to peer"),
			 (detail && detail[0]) ? errdetail_internal("%s", detail) : 0,
			 peer_errcontext(sql)));
}

/*
 * peer_count_result
 *		Add a result's value bytes to morango_peer_stats.bytes_in.
 */
static void
peer_count_result(const PGresult *res)
{
	int			ntuples = PQntuples(res);
	int			nfields = PQnfields(res);
	uint64		bytes = 0;

	for (int r = 0; r < ntuples; r++)
		for (int f = 0; f < nfields; f++)
			bytes += PQgetlength(res, r, f);
	morango_peer_stats.bytes_in += bytes;
}

/*
 * peer_wait_loop
 *		Finish sending the query, then wait for and collect its results
 *		until PQgetResult() returns NULL (or a COPY state), and return the
 *		last one (NULL if there was none).  If deadline (0 = none) passes
 *		first, set *timed_out and return NULL with the query still running.
 *		Throws on interrupt and on a lost connection; frees partial results
 *		when it does.
 */
static PGresult *
peer_wait_loop(PGconn *conn, const char *sql, TimestampTz deadline, bool *timed_out)
{
	PGresult   *volatile last = NULL;

	*timed_out = false;
	PG_TRY();
	{
		bool		flushing = true;
		bool		done = false;

		while (!done)
		{
			int			rc;

			if (flushing)
			{
				int			r = PQflush(conn);

				if (r < 0)
					peer_lost(conn, sql);
				flushing = (r > 0);
			}
			while (!flushing && !PQisBusy(conn))
			{
				PGresult   *res = PQgetResult(conn);
				ExecStatusType status;

				if (res == NULL)
				{
					done = true;
					break;
				}
				peer_count_result(res);
				PQclear(last);
				last = res;
				status = PQresultStatus(res);
				if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT ||
					status == PGRES_COPY_BOTH)
				{
					done = true;
					break;
				}
			}
			if (done)
				break;

			if (PQsocket(conn) == PGINVALID_SOCKET)
				peer_lost(conn, sql);
			rc = peer_wait_socket(conn, WL_SOCKET_READABLE | (flushing ? WL_SOCKET_WRITEABLE : 0),
								  deadline);
			if (rc == 0)
			{
				*timed_out = true;
				break;
			}
			if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(conn))
				peer_lost(conn, sql);
		}
	}
	PG_CATCH();
	{
		PQclear(last);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (*timed_out)
	{
		PQclear(last);
		return NULL;
	}
	return last;
}

/*
 * peer_wait_result
 *		peer_wait_loop(), and if cancel_on_exit, send the peer a cancel
 *		request when the wait ends in an ERROR (query cancel,
 *		statement_timeout, out of memory ...) or a FATAL exit (terminate):
 *		FATAL does not pass through PG_CATCH, hence PG_ENSURE_ERROR_CLEANUP.
 */
static PGresult *
peer_wait_result(PGconn *conn, const char *sql, TimestampTz deadline,
				 bool cancel_on_exit, bool *timed_out)
{
	PGresult   *volatile res = NULL;

	if (!cancel_on_exit)
		return peer_wait_loop(conn, sql, deadline, timed_out);

	PG_ENSURE_ERROR_CLEANUP(peer_cancel_callback, PointerGetDatum(conn));
	{
		res = peer_wait_loop(conn, sql, deadline, timed_out);
	}
	PG_END_ENSURE_ERROR_CLEANUP(peer_cancel_callback, PointerGetDatum(conn));

	return res;
}

/*
 * peer_report_error
 *		Re-raise a failed remote call: the peer's SQLSTATE, message,
 *		detail, hint and context, and the SQL as context; or "lost
 *		connection to peer" if the connection is gone.  Frees res.
 */
static void
peer_report_error(PGconn *conn, PGresult *res, const char *sql)
{
	char	   *volatile sqlstate_text = NULL;
	char	   *volatile primary = NULL;
	char	   *volatile detail = NULL;
	char	   *volatile hint = NULL;
	char	   *volatile context = NULL;
	volatile bool lost = false;
	int			sqlstate;

	PG_TRY();
	{
		if (PQstatus(conn) == CONNECTION_BAD)
		{
			lost = true;
			detail = peer_text(PQresultErrorMessage(res));
			if (detail == NULL || detail[0] == '\0')
				detail = peer_text(PQerrorMessage(conn));
		}
		else
		{
			sqlstate_text = peer_text(PQresultErrorField(res, PG_DIAG_SQLSTATE));
			primary = peer_text(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
			detail = peer_text(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
			hint = peer_text(PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
			context = peer_text(PQresultErrorField(res, PG_DIAG_CONTEXT));
			if (primary == NULL || primary[0] == '\0')
				primary = peer_text(PQresultErrorMessage(res));
		}
	}
	PG_CATCH();
	{
		PQclear(res);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PQclear(res);

	if (lost)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("lost connection to peer"),
				 (detail && detail[0]) ? errdetail_internal("%s", detail) : 0,
				 peer_errcontext(sql)));

	if (sqlstate_text != NULL && strlen(sqlstate_text) == 5)
		sqlstate = MAKE_SQLSTATE(sqlstate_text[0], sqlstate_text[1], sqlstate_text[2],
								 sqlstate_text[3], sqlstate_text[4]);
	else
		sqlstate = ERRCODE_CONNECTION_EXCEPTION;

	ereport(ERROR,
			(errcode(sqlstate),
			 (primary && primary[0]) ? errmsg_internal("%s", primary) :
			 errmsg("could not obtain message string for remote error"),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 context ? errcontext("%s", context) : 0,
			 peer_errcontext(sql)));
}

/*
 * morango_peer_exec
 *		Run one SQL statement on the peer with text parameters ($1 ...)
 *		and return its result, which the caller must PQclear() (wrap its
 *		use in PG_TRY/PG_FINALLY).
 *
 * sql and values are UTF8; values[i] NULL is SQL NULL; types may be NULL
 * (the peer infers them).  Values are sent as parameters, never pasted
 * into the SQL.  The result is the last one the statement produced, with
 * status PGRES_TUPLES_OK, PGRES_COMMAND_OK or PGRES_EMPTY_QUERY; values
 * are in text form.
 *
 * Throws:
 *	- the peer's error, with its SQLSTATE, if the statement fails there;
 *	- ERRCODE_CONNECTION_FAILURE "lost connection to peer";
 *	- ERRCODE_QUERY_CANCELED "remote call to peer timed out after N ms"
 *	  when timeout_ms > 0 and the call takes longer: the statement is
 *	  cancelled on the peer first, and we wait up to MORANGO_CANCEL_WAIT_MS
 *	  for the peer to confirm;
 *	- whatever an interrupt raises (query cancel, statement_timeout,
 *	  terminate): the statement is cancelled on the peer first.
 * After a remote error or a confirmed timeout the connection is idle and
 * can be used again; after any other error, check PQstatus() and
 * PQtransactionStatus() != PQTRANS_ACTIVE or just disconnect.
 *
 * Counts payload bytes in morango_peer_stats.
 */
PGresult *
morango_peer_exec(PGconn *conn, const char *sql, int nparams, const Oid *types,
				  const char *const *values, int timeout_ms)
{
	morango_peer_send(conn, sql, nparams, types, values, timeout_ms);
	return morango_peer_result(conn, sql, timeout_ms);
}

/*
 * morango_peer_send
 *		The first half of morango_peer_exec(): send the statement, all of
 *		it (the connection is non-blocking: libpq would otherwise keep what
 *		the socket did not take until the result is awaited, and the peer
 *		could not start), and return without waiting for the result, so
 *		that the caller can work while the peer runs it.  Sending takes at
 *		most timeout_ms (0: no limit); past that, or on an interrupt, it
 *		throws and the connection must be closed.  Exactly one
 *		morango_peer_result() must follow before the connection is used
 *		again (or the connection is closed).
 */
void
morango_peer_send(PGconn *conn, const char *sql, int nparams, const Oid *types,
				  const char *const *values, int timeout_ms)
{
	uint64		bytes_out;
	TimestampTz deadline = 0;
	int			r;

	Assert(conn != NULL && sql != NULL);
	if (nparams < 0 || (nparams > 0 && values == NULL))
		elog(ERROR, "invalid parameters for a remote call");

	bytes_out = strlen(sql);
	for (int i = 0; i < nparams; i++)
		if (values[i] != NULL)
			bytes_out += strlen(values[i]);

	if (PQstatus(conn) != CONNECTION_OK)
		peer_lost(conn, sql);
	if (!PQsendQueryParams(conn, sql, nparams, types, values, NULL, NULL, 0))
	{
		if (PQstatus(conn) != CONNECTION_OK)
			peer_lost(conn, sql);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("could not send query to peer"),
				 errdetail_internal("%s", peer_text(PQerrorMessage(conn))),
				 peer_errcontext(sql)));
	}
	morango_peer_stats.calls++;
	morango_peer_stats.bytes_out += bytes_out;

	if (timeout_ms > 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	while ((r = PQflush(conn)) > 0)
	{
		int			rc = peer_wait_socket(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, deadline);

		if (rc == 0)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("remote call to peer timed out after %d ms while sending", timeout_ms),
					 peer_errcontext(sql)));
		if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(conn))
			peer_lost(conn, sql);
	}
	if (r < 0)
		peer_lost(conn, sql);
}

/*
 * morango_peer_result
 *		The second half of morango_peer_exec(): wait for the result of the
 *		statement sent by morango_peer_send() (sql, for messages), at most
 *		timeout_ms from now (0: no limit).  Returns and throws as
 *		morango_peer_exec().
 */
PGresult *
morango_peer_result(PGconn *conn, const char *sql, int timeout_ms)
{
	TimestampTz deadline = 0;
	PGresult   *res;
	bool		timed_out;

	if (timeout_ms > 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	res = peer_wait_result(conn, sql, deadline, true, &timed_out);
	if (timed_out)
	{
		if (peer_send_cancel(conn))
		{
			/* let the peer confirm, so the connection is idle again */
			deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   MORANGO_CANCEL_WAIT_MS);
			res = peer_wait_result(conn, sql, deadline, false, &timed_out);
			PQclear(res);
		}
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("remote call to peer timed out after %d ms", timeout_ms),
				 peer_errcontext(sql)));
	}
	if (res == NULL)
		peer_lost(conn, sql);

	switch (PQresultStatus(res))
	{
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
		case PGRES_EMPTY_QUERY:
			return res;
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			PQclear(res);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("COPY is not supported in a remote call to a peer"),
					 errdetail("The connection is left in COPY mode; disconnect it."),
					 peer_errcontext(sql)));
			break;
		default:
			peer_report_error(conn, res, sql);
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * morango_peer_disconnect
 *		Close a connection made by morango_peer_connect(); NULL does
 *		nothing.  Never throws.  A statement still running there (sent by
 *		morango_peer_send(), its result never read) is not cancelled: a
 *		cancel request can block on an unreachable peer; the peer ends the
 *		statement when it finds the connection closed.
 */
void
morango_peer_disconnect(PGconn *conn)
{
	if (conn == NULL)
		return;
	PQfinish(conn);
	ReleaseExternalFD();
}


/* ------------------------------------------------------------------------
 * The foreign-data wrapper
 * ------------------------------------------------------------------------
 */

/*
 * morango_fdw_validator
 *		Validator of FOREIGN DATA WRAPPER morango (SQL:
 *		morango.fdw_validator(text[], oid)).
 *
 *	- the wrapper itself takes no options;
 *	- a server (a peer) takes libpq connection options: host, port,
 *	  dbname, sslmode, options, application_name, connect_timeout ...;
 *	- a user mapping takes only user and password.
 * client_encoding and fallback_application_name are refused everywhere
 * (the transport sets them), as are debug options (replication), secrets
 * other than the password, and options PostgreSQL does not allow
 * server-side connections to set.  Values are checked by libpq when a
 * connection is made.
 */
Datum
morango_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	PeerOptionKind want;
	ListCell   *lc;

	if (catalog == ForeignServerRelationId)
		want = PEER_OPTION_SERVER;
	else if (catalog == UserMappingRelationId)
		want = PEER_OPTION_MAPPING;
	else
		want = PEER_OPTION_INVALID; /* the wrapper: nothing is valid */

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);
		PeerOptionKind kind = peer_option_kind(def->defname);
		StringInfoData valid;

		if (kind == want && want != PEER_OPTION_INVALID)
			continue;

		if (kind == PEER_OPTION_RESERVED)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("option \"%s\" cannot be set for a morango peer", def->defname),
					 errdetail("The morango transport sets \"%s\" itself on every peer connection.",
							   def->defname)));
		if (kind == PEER_OPTION_MAPPING && want == PEER_OPTION_SERVER)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("Set \"%s\" in a user mapping for the peer.", def->defname)));
		if (kind == PEER_OPTION_SERVER && want == PEER_OPTION_MAPPING)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("Set \"%s\" on the foreign server; a user mapping takes only \"user\" and \"password\".",
							 def->defname)));

		initStringInfo(&valid);
		if (want != PEER_OPTION_INVALID)
		{
			for (const PQconninfoOption *opt = peer_conndefaults(); opt->keyword; opt++)
			{
				if (peer_option_kind(opt->keyword) != want)
					continue;
				appendStringInfo(&valid, "%s%s", valid.len > 0 ? ", " : "", opt->keyword);
			}
		}
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", def->defname),
				 valid.len > 0 ?
				 errhint("Valid options in this context are: %s", valid.data) :
				 errhint("There are no valid options in this context.")));
	}

	PG_RETURN_VOID();
}


/* ------------------------------------------------------------------------
 * Test helpers: exported, but declared only by the regression tests
 * ------------------------------------------------------------------------
 */

/*
 * morango_peer_query_test
 *		SQL: (peer text, sql text, args text[] [, timeout_ms int
 *		[, connect_timeout_s int]]) RETURNS text.  Connect, run sql with
 *		args as $1..., disconnect; return the first column of the first
 *		row (NULL if none or SQL NULL), or the command tag.  Values are
 *		converted between the database encoding and UTF8.  NULL peer or
 *		sql gives NULL.
 */
Datum
morango_peer_query_test(PG_FUNCTION_ARGS)
{
	char	   *peer;
	char	   *sql;
	int			nparams = 0;
	const char **volatile values = NULL;
	volatile int timeout_ms = 0;
	int			connect_timeout_s = 0;
	PGconn	   *volatile conn;
	PGresult   *volatile res = NULL;
	char	   *volatile result = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	peer = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	sql = pg_server_to_any(sql, strlen(sql), PG_UTF8);

	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
	{
		ArrayType  *args = PG_GETARG_ARRAYTYPE_P(2);
		Datum	   *elems;
		bool	   *nulls;

		if (ARR_NDIM(args) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("args must be a one-dimensional array")));
		deconstruct_array(args, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &nparams);
		values = palloc0(Max(nparams, 1) * sizeof(char *));
		for (int i = 0; i < nparams; i++)
		{
			char	   *v;

			if (nulls[i])
				continue;
			v = TextDatumGetCString(elems[i]);
			values[i] = pg_server_to_any(v, strlen(v), PG_UTF8);
		}
	}
	if (PG_NARGS() > 3 && !PG_ARGISNULL(3))
		timeout_ms = PG_GETARG_INT32(3);
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4))
		connect_timeout_s = PG_GETARG_INT32(4);

	conn = morango_peer_connect(peer, "morango test", connect_timeout_s);
	PG_TRY();
	{
		res = morango_peer_exec(conn, sql, nparams, NULL, values, timeout_ms);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			if (PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
				result = pstrdup(pg_any_to_server(PQgetvalue(res, 0, 0),
												  PQgetlength(res, 0, 0), PG_UTF8));
		}
		else
			result = pstrdup(PQcmdStatus(res));
	}
	PG_FINALLY();
	{
		PQclear(res);
		morango_peer_disconnect(conn);
	}
	PG_END_TRY();

	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * morango_peer_display_test
 *		SQL: (peer text) RETURNS text, STRICT: morango_peer_display().
 */
Datum
morango_peer_display_test(PG_FUNCTION_ARGS)
{
	char	   *peer = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(morango_peer_display(peer)));
}

/*
 * morango.peer_has_secret(peer text) -> boolean
 *		morango_peer_has_secret(): does the peer's connection string carry
 *		a password (or another secret option)?  Strict.
 */
Datum
morango_peer_has_secret_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(morango_peer_has_secret(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * morango_peer_stats_test
 *		SQL: () RETURNS bigint[]: {calls, bytes_out, bytes_in} of
 *		morango_peer_stats.
 */
Datum
morango_peer_stats_test(PG_FUNCTION_ARGS)
{
	Datum		elems[3];

	elems[0] = Int64GetDatum((int64) morango_peer_stats.calls);
	elems[1] = Int64GetDatum((int64) morango_peer_stats.bytes_out);
	elems[2] = Int64GetDatum((int64) morango_peer_stats.bytes_in);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, 3, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*-------------------------------------------------------------------------
 *
 * crypto.c
 *		Key pairs and signatures for certificates, with OpenSSL's libcrypto.
 *		No SPI, no libpq.
 *
 * The scheme is Morango's own, so chains can be exchanged with it: RSA with
 * 2048-bit keys and e = 65537, signatures RSASSA-PKCS1-v1_5 over SHA-256 of
 * the message's bytes, base64 without newlines.  A public key is written as
 * the base64 DER of the PKCS#1 RSAPublicKey (no PEM header); SubjectPublicKey
 * Info DER is accepted too.  A private key is a PEM "RSA PRIVATE KEY".
 *
 * Every OpenSSL object is freed before an error is raised, so nothing leaks
 * out of a failed call.
 *
 * IDENTIFICATION
 *		src/crypto.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "access/htup_details.h"
#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "morango.h"

#define MORANGO_RSA_BITS 2048

PG_FUNCTION_INFO_V1(morango_key_generate_sql);
PG_FUNCTION_INFO_V1(morango_sign_sql);
PG_FUNCTION_INFO_V1(morango_verify_sql);
PG_FUNCTION_INFO_V1(morango_public_key_sql);

/* base64 of len bytes, NUL-terminated, without newlines; palloc'd */
static char *
b64_encode(const unsigned char *data, int len)
{
	int			cap = pg_b64_enc_len(len) + 1;
	char	   *out = palloc(cap);
	int			n = pg_b64_encode((const char *) data, len, out, cap);

	if (n < 0)
		elog(ERROR, "could not encode base64");
	out[n] = '\0';
	return out;
}

/* decode base64 text, ignoring whitespace; NULL if it is not base64 */
static unsigned char *
b64_decode(const char *text, int *len)
{
	size_t		tl = strlen(text);
	char	   *clean = palloc(tl + 1);
	int			cl = 0;
	unsigned char *out;
	int			n;

	for (size_t i = 0; i < tl; i++)
		if (!isspace((unsigned char) text[i]))
			clean[cl++] = text[i];
	clean[cl] = '\0';
	out = palloc(pg_b64_dec_len(cl) + 1);
	n = pg_b64_decode(clean, cl, (char *) out, pg_b64_dec_len(cl) + 1);
	pfree(clean);
	if (n < 0)
		return NULL;
	*len = n;
	return out;
}

/*
 * The UTF-8 bytes of a text value: signatures cover UTF-8, whatever the
 * database encoding, so databases in different encodings agree.
 */
static const unsigned char *
text_utf8(text *t, size_t *len)
{
	const char *src = VARDATA_ANY(t);
	int			srclen = VARSIZE_ANY_EXHDR(t);
	char	   *conv = pg_server_to_any(src, srclen, PG_UTF8);

	*len = (conv == src) ? (size_t) srclen : strlen(conv);
	return (const unsigned char *) conv;
}

/* the first OpenSSL error message, or a fallback */
static const char *
ssl_error(void)
{
	unsigned long e = ERR_get_error();
	const char *r;

	ERR_clear_error();
	if (e == 0)
		return "no error code";
	r = ERR_reason_error_string(e);
	return r ? r : "unknown error";
}

/*
 * public_key_parse
 *		Parse a public key string (base64 DER of PKCS#1 RSAPublicKey or of
 *		SubjectPublicKeyInfo, PEM header lines tolerated).  Returns NULL when
 *		it is not an RSA public key.  The caller frees with EVP_PKEY_free.
 */
static EVP_PKEY *
public_key_parse(const char *key)
{
	StringInfoData body;
	const char *p = key;
	unsigned char *der;
	const unsigned char *q;
	int			len;
	EVP_PKEY   *pkey;

	/* drop "-----BEGIN ...-----" / "-----END ...-----" lines */
	initStringInfo(&body);
	while (*p)
	{
		const char *eol = strchr(p, '\n');
		size_t		ll = eol ? (size_t) (eol - p) : strlen(p);

		if (!(ll >= 5 && strncmp(p, "-----", 5) == 0))
			appendBinaryStringInfo(&body, p, ll);
		p += ll;
		if (*p == '\n')
			p++;
	}
	der = b64_decode(body.data, &len);
	pfree(body.data);
	if (der == NULL || len == 0)
		return NULL;

	q = der;
	pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &q, len);
	if (pkey == NULL || q != der + len)
	{
		EVP_PKEY_free(pkey);
		ERR_clear_error();
		q = der;
		pkey = d2i_PUBKEY(NULL, &q, len);
		if (pkey != NULL && (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA || q != der + len))
		{
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
	}
	ERR_clear_error();
	pfree(der);
	return pkey;
}

/*
 * public_key_get
 *		public_key_parse, raising when the key does not parse or is shorter
 *		than MORANGO_RSA_BITS.
 */
static EVP_PKEY *
public_key_get(const char *key)
{
	EVP_PKEY   *pkey = public_key_parse(key);

	if (pkey == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not an RSA public key"),
				 errdetail("A public key is the base64 DER of a PKCS#1 RSAPublicKey or of a SubjectPublicKeyInfo.")));
	if (EVP_PKEY_get_bits(pkey) < MORANGO_RSA_BITS)
	{
		EVP_PKEY_free(pkey);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("RSA public keys must have at least %d bits", MORANGO_RSA_BITS)));
	}
	return pkey;
}

/*
 * The PKCS#1 public key string of pkey, palloc'd.  Frees pkey, also when it
 * raises.
 */
static char *
public_key_string(EVP_PKEY *pkey)
{
	unsigned char *der = NULL;
	int			len = i2d_PublicKey(pkey, &der);
	char	   *out;

	EVP_PKEY_free(pkey);
	if (len <= 0)
		elog(ERROR, "could not encode a public key: %s", ssl_error());
	out = b64_encode(der, len);
	OPENSSL_free(der);
	return out;
}

/* parse a PEM private key; NULL when it is not one */
static EVP_PKEY *
private_key_parse(const char *pem)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *pkey;

	if (bio == NULL)
		elog(ERROR, "out of memory in OpenSSL");
	/* an empty passphrase: an encrypted key fails here instead of prompting */
	pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *) "");
	BIO_free(bio);
	ERR_clear_error();
	if (pkey != NULL && EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

/*
 * morango.key_generate() -> (private_key text, public_key text)
 *
 * A new RSA-2048 key pair.  Not granted to anyone: only the extension's own
 * functions call it, and they store the private key where only the owner
 * reads it.
 */
Datum
morango_key_generate_sql(PG_FUNCTION_ARGS)
{
	EVP_PKEY   *pkey;
	BIO		   *bio;
	char	   *pem_data;
	long		pem_len;
	char	   *priv;
	char	   *pub;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "key_generate must return a composite");

	pkey = EVP_RSA_gen(MORANGO_RSA_BITS);
	if (pkey == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate an RSA key pair: %s", ssl_error())));
	bio = BIO_new(BIO_s_mem());
	if (bio == NULL ||
		!PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL, NULL, 0, NULL, NULL))
	{
		BIO_free(bio);
		EVP_PKEY_free(pkey);
		elog(ERROR, "could not write a private key: %s", ssl_error());
	}
	pem_len = BIO_get_mem_data(bio, &pem_data);
	priv = pnstrdup(pem_data, pem_len);
	BIO_free(bio);
	pub = public_key_string(pkey);

	values[0] = CStringGetTextDatum(priv);
	values[1] = CStringGetTextDatum(pub);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * morango.public_key(key text) -> text
 *
 * The canonical string (base64 PKCS#1 DER) of an RSA public key given in any
 * accepted form; raises when it is not one or is shorter than 2048 bits.
 */
Datum
morango_public_key_sql(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	EVP_PKEY   *pkey = public_key_get(key);

	PG_RETURN_TEXT_P(cstring_to_text(public_key_string(pkey)));
}

/*
 * morango.sign(private_key text, message text) -> text
 *
 * RSASSA-PKCS1-v1_5 / SHA-256 signature of the message's UTF-8 bytes, as
 * base64.  Deterministic: the same key and message give the same signature.
 * Not granted to anyone (it takes a private key).
 */
Datum
morango_sign_sql(PG_FUNCTION_ARGS)
{
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *msg = PG_GETARG_TEXT_PP(1);
	EVP_PKEY   *pkey = private_key_parse(pem);
	EVP_MD_CTX *md;
	unsigned char *sig;
	size_t		siglen = 0;
	size_t		mlen;
	const unsigned char *m = text_utf8(msg, &mlen);
	bool		ok;
	char	   *out;

	/* wipe our C copy of the PEM text (the argument datum itself remains) */
	explicit_bzero(pem, strlen(pem));
	if (pkey == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not an RSA private key in PEM form")));

	md = EVP_MD_CTX_new();
	ok = md != NULL &&
		EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
		EVP_DigestSign(md, NULL, &siglen, m, mlen) == 1;
	sig = ok ? palloc(siglen) : NULL;
	ok = ok && EVP_DigestSign(md, sig, &siglen, m, mlen) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not sign: %s", ssl_error())));
	out = b64_encode(sig, (int) siglen);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * morango_verify
 *		Does `sig_b64` sign `msg` (len UTF-8 bytes) under the public key string?
 *		Raises only when the public key does not parse; a malformed signature
 *		is simply not valid.
 */
bool
morango_verify(const char *public_key, const char *msg, size_t len, const char *sig_b64)
{
	EVP_PKEY   *pkey = public_key_get(public_key);
	unsigned char *sig;
	int			siglen;
	EVP_MD_CTX *md;
	bool		ok;

	sig = b64_decode(sig_b64, &siglen);
	if (sig == NULL || siglen == 0)
	{
		EVP_PKEY_free(pkey);
		return false;
	}
	md = EVP_MD_CTX_new();
	ok = md != NULL &&
		EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
		EVP_DigestVerify(md, sig, siglen, (const unsigned char *) msg, len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	pfree(sig);
	return ok;
}

/*
 * morango.verify(public_key text, message text, signature text) -> boolean
 */
Datum
morango_verify_sql(PG_FUNCTION_ARGS)
{
	char	   *pub = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *msg = PG_GETARG_TEXT_PP(1);
	char	   *sig = text_to_cstring(PG_GETARG_TEXT_PP(2));
	size_t		mlen;
	const unsigned char *m = text_utf8(msg, &mlen);

	PG_RETURN_BOOL(morango_verify(pub, (const char *) m, mlen, sig));
}

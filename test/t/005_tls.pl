# 005_tls.pl
#
# Sync over TLS with a self-signed server certificate: the server accepts
# the peer role only over TLS (hostssl), a sync with sslmode=require works,
# one with sslmode=verify-full checks the certificate against its root,
# and without TLS, or against another root, the connection is refused with
# a clear error and nothing changes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $schema = q{
    CREATE EXTENSION morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
};

# a self-signed certificate for 127.0.0.1, and an unrelated one
my $dir = PostgreSQL::Test::Utils::tempdir;
sub make_cert
{
	my ($name) = @_;
	system_or_bail('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.crt");
	chmod 0600, "$dir/$name.key";
}
make_cert('server');
make_cert('other');

my $a = PostgreSQL::Test::Cluster->new('tls_server');
$a->init;
$a->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
max_worker_processes = 16
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
});
# the peer role comes in over TLS only
my $hba = slurp_file($a->data_dir . '/pg_hba.conf');
open(my $fh, '>', $a->data_dir . '/pg_hba.conf') or die;
print $fh "hostssl all peer_user 127.0.0.1/32 scram-sha-256\n";
print $fh "hostnossl all peer_user 127.0.0.1/32 reject\n$hba";
close $fh;
$a->start;
$a->safe_psql('postgres', $schema);
$a->safe_psql('postgres', q{
    CREATE ROLE peer_user LOGIN PASSWORD 'secret';
    SELECT morango.grant_peer('peer_user');
    INSERT INTO facility VALUES ('f1', 'North');
});

my $b = PostgreSQL::Test::Cluster->new('tls_laptop');
$b->init;
$b->append_conf('postgresql.conf', 'max_worker_processes = 16');
$b->start;
$b->safe_psql('postgres', $schema);

my $port = $a->port;
my $peer = "host=127.0.0.1 port=$port dbname=postgres user=peer_user password=secret";

# without TLS: refused by the server, nothing changes
my ($ret, $out, $err) = $b->psql('postgres',
	qq{SELECT morango.sync('$peer sslmode=disable', 'facilitydata', direction => 'pull')});
isnt($ret, 0, 'a sync without TLS is refused');
like($err, qr/no encryption/, 'and the error says why');
is($b->safe_psql('postgres', 'SELECT count(*) FROM facility'), '0', 'nothing arrived');

# against another root: the certificate does not verify
($ret, $out, $err) = $b->psql('postgres',
	qq{SELECT morango.sync('$peer sslmode=verify-full sslrootcert=$dir/other.crt', 'facilitydata',
	                       direction => 'pull')});
isnt($ret, 0, 'a server certificate from another root is refused');
like($err, qr/certificate verify failed/, 'and the error says why');
is($b->safe_psql('postgres', 'SELECT count(*) FROM facility'), '0', 'nothing arrived');

# sslmode=require: encrypted, not verified
$b->safe_psql('postgres',
	qq{SELECT morango.sync('$peer sslmode=require', 'facilitydata', direction => 'pull')});
is($b->safe_psql('postgres', 'SELECT name FROM facility'), 'North', 'a sync over TLS works');

# verify-full against the right root, both ways; the server saw TLS
$b->safe_psql('postgres', q{INSERT INTO facility VALUES ('f2', 'South')});
$b->safe_psql('postgres',
	qq{SELECT morango.sync('$peer sslmode=verify-full sslrootcert=$dir/server.crt', 'facilitydata')});
is($a->safe_psql('postgres', 'SELECT string_agg(name, \',\' ORDER BY id) FROM facility'),
	'North,South', 'verify-full with the right root syncs both ways');
is($a->safe_psql('postgres', q{SELECT count(*) FROM morango.sync_sessions WHERE is_server}),
	'2', 'the server ran both sessions (the refused ones never reached it)');

$b->stop;
$a->stop;
done_testing();

# 003_sync.pl
#
# Sync between two real clusters:
#  - a sync cut in the middle of a transfer (its worker killed) resumes
#    from the last chunk the receiver holds, with nothing lost or doubled;
#  - a peer that is down, then up: a clear error, then success;
#  - the peer role: a password, the peer API only, no table access;
#    a wrong password is a clear error and changes nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $schema = q{
    CREATE EXTENSION morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE log (id int PRIMARY KEY, facility_id text NOT NULL REFERENCES facility,
                      item text NOT NULL, payload text);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
    SELECT morango.register_model('log', 'facilitydata', partition => $$facility_id || ':log'$$);
};

my $a = PostgreSQL::Test::Cluster->new('server');
$a->init;
$a->append_conf('postgresql.conf', "max_worker_processes = 16\npassword_encryption = 'scram-sha-256'");
# the peer role must give a password, even over the local socket
my $hba = slurp_file($a->data_dir . '/pg_hba.conf');
open(my $fh, '>', $a->data_dir . '/pg_hba.conf') or die;
print $fh "local all peer_user scram-sha-256\n$hba";
close $fh;
$a->start;
$a->safe_psql('postgres', $schema);
$a->safe_psql('postgres', q{
    CREATE ROLE peer_user LOGIN PASSWORD 'secret';
    SELECT morango.grant_peer('peer_user');
    INSERT INTO facility VALUES ('f1', 'North');
    INSERT INTO log SELECT g, 'f1', 'item ' || g, repeat('x', 100) FROM generate_series(1, 3000) g;
});

my $b = PostgreSQL::Test::Cluster->new('laptop');
$b->init;
$b->append_conf('postgresql.conf', 'max_worker_processes = 16');
$b->start;
$b->safe_psql('postgres', $schema);

my $host = $a->host;
my $port = $a->port;
$b->safe_psql('postgres', qq{
    CREATE SERVER school FOREIGN DATA WRAPPER morango
        OPTIONS (host '$host', port '$port', dbname 'postgres');
    CREATE USER MAPPING FOR CURRENT_USER SERVER school OPTIONS (user 'peer_user', password 'wrong');
});

# a wrong password: a clear error, nothing changes
my ($ret, $out, $err) = $b->psql('postgres', q{SELECT morango.sync('school', 'facilitydata')});
isnt($ret, 0, 'a wrong password fails');
like($err, qr/password authentication failed/, 'and says why');
is($b->safe_psql('postgres', 'SELECT count(*) FROM log'), '0', 'nothing arrived');

$b->safe_psql('postgres', q{ALTER USER MAPPING FOR CURRENT_USER SERVER school OPTIONS (SET password 'secret')});

# the peer role can call the peer API and nothing else
($ret, $out, $err) = $a->psql('postgres', 'SELECT count(*) FROM morango.store',
    connstr => $a->connstr('postgres') . " user=peer_user password=secret");
isnt($ret, 0, 'the peer role cannot read the store');
($ret, $out, $err) = $a->psql('postgres', 'SELECT count(*) FROM log',
    connstr => $a->connstr('postgres') . " user=peer_user password=secret");
isnt($ret, 0, 'nor the application tables');

# a pull in chunks of 10, killed half way
my $bg = $b->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, q{
    \echo started
    SELECT morango.sync('school', 'facilitydata', direction => 'pull', chunk_size => 10);
});
$b->poll_query_until('postgres', q{
    SELECT COALESCE(max(records_transferred), 0) >= 300 FROM morango.transfer_sessions});
$b->safe_psql('postgres', q{
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'morango sync'});
$bg->quit;
$b->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'morango sync'});

my $partial = $b->safe_psql('postgres', q{
    SELECT records_transferred FROM morango.transfer_sessions WHERE NOT push AND active});
ok($partial > 0 && $partial < 3001, "the transfer stopped part way ($partial records)");
is($b->safe_psql('postgres', 'SELECT count(*) FROM log'), '0', 'nothing was applied yet');

# again: it resumes where it stopped
$b->safe_psql('postgres', q{SELECT morango.sync('school', 'facilitydata', direction => 'pull', chunk_size => 10)});
is($b->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM log'), '3000|3000',
    'every record arrived once');
is($b->safe_psql('postgres', q{SELECT count(*) FROM morango.sync_sessions WHERE NOT is_server AND direction = 'pull'}), '1',
    'the same sync session was resumed');
my $sent = $a->safe_psql('postgres', q{SELECT max(records_transferred) FROM morango.transfer_sessions});
is($sent, '3001', 'the server sent each record once (3000 logs and the facility)');
is($b->safe_psql('postgres', 'SELECT count(*) FROM morango.buffer'), '0', 'no buffer left behind');
is($a->safe_psql('postgres', 'SELECT count(*) FROM morango.buffer'), '0', 'on either side');

# a peer that is down, then up
$b->safe_psql('postgres', q{INSERT INTO log VALUES (5000, 'f1', 'from the laptop', NULL)});
$a->stop;
($ret, $out, $err) = $b->psql('postgres', q{SELECT morango.sync('school', 'facilitydata')});
isnt($ret, 0, 'a peer that is down fails');
like($err, qr/could not connect|connection to server/, 'with a clear error');
$a->start;
$b->safe_psql('postgres', q{SELECT morango.sync('school', 'facilitydata')});
is($a->safe_psql('postgres', q{SELECT item FROM log WHERE id = 5000}), 'from the laptop',
    'once it is back, the sync goes through');

# the invariants hold after all that (doc/invariants.md)
is($a->safe_psql('postgres', 'SELECT invariant || \': \' || detail FROM morango.check_invariants()'), '',
    'invariants hold on a');
is($b->safe_psql('postgres', 'SELECT invariant || \': \' || detail FROM morango.check_invariants()'), '',
    'invariants hold on b');

$b->stop;
$a->stop;
done_testing();

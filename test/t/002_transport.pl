# 002_transport.pl
#
# The peer transport (src/transport.c) between two real clusters:
#  - a query cancel of the caller (pg_cancel_backend from another session)
#    also cancels the remote query on the peer;
#  - so does terminating the caller (pg_terminate_backend: a FATAL exit,
#    which does not pass through PG_CATCH);
#  - a peer that accepts the TCP connection but never answers is given up
#    after connect_timeout_s, and the wait for it is interruptible;
#  - a peer stopped in the middle of a remote call gives "lost connection
#    to peer"; a stopped peer gives "could not connect to peer"; once it is
#    back, calls work again.
use strict;
use warnings;
use IO::Socket::INET;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $caller = PostgreSQL::Test::Cluster->new('caller');
$caller->init;
$caller->start;
my $peer = PostgreSQL::Test::Cluster->new('peer');
$peer->init;
$peer->start;

$caller->safe_psql('postgres', q{
    CREATE EXTENSION morango;
    CREATE FUNCTION peer_query(peer text, sql text, args text[] DEFAULT NULL,
                               timeout_ms int DEFAULT 0, connect_timeout_s int DEFAULT 0)
    RETURNS text LANGUAGE C AS '$libdir/morango', 'morango_peer_query_test';
});

# the peer's connection string as an SQL literal
(my $pc = $peer->connstr('postgres')) =~ s/'/''/g;
$pc = "'$pc'";

is($caller->safe_psql('postgres', "SELECT peer_query($pc, 'SELECT 40 + \$1::int', '{2}')"),
    '42', 'a remote call works');

# true once the peer runs (or no longer runs) query $q
sub peer_runs
{
    my ($q, $want) = @_;
    return $peer->poll_query_until('postgres', qq{
        SELECT count(*) = $want FROM pg_stat_activity
        WHERE state = 'active' AND query = '$q'});
}

# start peer_query(..., $remote) in a background session of the caller and
# wait until the peer runs it
sub start_remote_call
{
    my ($remote) = @_;
    my $bg = $caller->background_psql('postgres', on_error_stop => 0);
    $bg->query_until(qr/started/,
        "\\echo started\nSELECT peer_query($pc, '$remote');\n");
    peer_runs($remote, 1) or die "the peer never ran $remote";
    return $bg;
}

my $caller_pid_sql = q{SELECT pid FROM pg_stat_activity
    WHERE query LIKE 'SELECT peer_query(%' AND pid <> pg_backend_pid()};

# --- query cancel of the caller
my $bg = start_remote_call('SELECT pg_sleep(300)');
$caller->safe_psql('postgres', "SELECT pg_cancel_backend(pid) FROM ($caller_pid_sql) c");
ok(peer_runs('SELECT pg_sleep(300)', 0),
    'cancelling the caller cancels the remote query');
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/,
    'the caller reports the cancel');
$bg->quit;

# --- terminate the caller: FATAL, no PG_CATCH, still cancelled on the peer
$bg = start_remote_call('SELECT pg_sleep(301)');
$caller->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM ($caller_pid_sql) c");
ok(peer_runs('SELECT pg_sleep(301)', 0),
    'terminating the caller cancels the remote query');
ok($caller->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM ($caller_pid_sql) c"), 'the caller is gone');
eval { $bg->quit; };

# --- a peer that accepts connections and never answers
my $silent = IO::Socket::INET->new(
    Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
  or die "could not listen: $!";
my $silent_pc = 'host=127.0.0.1 port=' . $silent->sockport
  . ' dbname=x sslmode=disable gssencmode=disable';
my $t0 = time;
my ($ret, $out, $err) = $caller->psql('postgres',
    "SELECT peer_query('$silent_pc', 'SELECT 1', NULL, 0, 2)");
my $elapsed = time - $t0;
like($err, qr/could not connect to peer.*\n.*timed out after 2 seconds/,
    'a silent peer: the connection attempt times out');
ok($elapsed >= 1.5 && $elapsed < 60, "and takes about connect_timeout_s ($elapsed s)");
($ret, $out, $err) = $caller->psql('postgres', qq{
    SET statement_timeout = '500ms';
    SELECT peer_query('$silent_pc', 'SELECT 1');});
like($err, qr/canceling statement due to statement timeout/,
    'waiting for a silent peer is interruptible');
close($silent);

# --- the peer goes away in the middle of a call
$bg = start_remote_call('SELECT pg_sleep(302)');
$peer->stop('fast');
$bg->query('SELECT 1');
like($bg->{stderr}, qr/lost connection to peer/,
    'a peer stopped mid-call: lost connection to peer');
$bg->quit;

($ret, $out, $err) = $caller->psql('postgres', "SELECT peer_query($pc, 'SELECT 1')");
like($err, qr/could not connect to peer/, 'a stopped peer: could not connect to peer');

$peer->start;
is($caller->safe_psql('postgres', "SELECT peer_query($pc, 'SELECT ''back''')"),
    'back', 'once the peer is back, calls work again');

# no cancel request went astray, nothing crashed
my $log = slurp_file($caller->logfile);
unlike($log, qr/could not send cancel request/, 'every cancel request was delivered');
unlike($log, qr/server process .* was terminated by signal/, 'no backend crashed');

$caller->stop;
$peer->stop;
done_testing();

# 009_peer_guard.pl
#
# A peer role that speaks the extended query protocol by hand, to keep a
# peer API call's transaction (and its locks) open after the call returns
# (issue 12, item 6b; src/peer.c):
#  - Execute without Sync: the call commits as it completes, so the
#    instance lock serialize took is free at once;
#  - Execute with a row limit, which leaves the portal suspended and the
#    transaction open while the backend waits for the client: the guard's
#    watchdog ends that connection within seconds, its work is rolled back
#    and the lock is free.
use strict;
use warnings;
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hub');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
    CREATE EXTENSION morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
    CREATE ROLE hostile LOGIN;
    SELECT morango.grant_peer('hostile');
});

# ---- a minimal frontend of the PostgreSQL protocol, version 3 ----

my $timeout = $PostgreSQL::Test::Utils::timeout_default;

sub connect_raw
{
    my ($user) = @_;
    my $path = $node->host . '/.s.PGSQL.' . $node->port;
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path)
      or die "cannot connect to $path: $!";
    my $startup = pack('N', 196608) . "user\0$user\0database\0postgres\0\0";
    syswrite($sock, pack('N', length($startup) + 4) . $startup);
    while (1)
    {
        my ($type, $payload) = read_msg($sock);
        die "no answer to the startup message" unless defined $type;
        die "connection refused: $payload" if $type eq 'E';
        last if $type eq 'Z';
    }
    return $sock;
}

sub send_msg
{
    my ($sock, $type, $payload) = @_;
    syswrite($sock, $type . pack('N', length($payload) + 4) . $payload);
}

sub read_exactly
{
    my ($sock, $n) = @_;
    my $buf = '';
    my $sel = IO::Select->new($sock);
    while (length($buf) < $n)
    {
        return undef unless $sel->can_read($timeout);
        my $got = sysread($sock, $buf, $n - length($buf), length($buf));
        return undef unless $got;
    }
    return $buf;
}

# one message: (type, payload), or () at end of stream
sub read_msg
{
    my ($sock) = @_;
    my $head = read_exactly($sock, 5);
    return () unless defined $head;
    my ($type, $len) = unpack('a N', $head);
    my $payload = $len > 4 ? read_exactly($sock, $len - 4) : '';
    return ($type, $payload);
}

# Parse, Bind and Execute (with a row limit) an unnamed statement, then
# Flush but no Sync; return the type of the message that ends the Execute
sub execute_no_sync
{
    my ($sock, $sql, $max_rows) = @_;
    send_msg($sock, 'P', "\0$sql\0" . pack('n', 0));
    send_msg($sock, 'B', "\0\0" . pack('n n n', 0, 0, 0));
    send_msg($sock, 'E', "\0" . pack('N', $max_rows));
    send_msg($sock, 'H', '');
    while (1)
    {
        my ($type, $payload) = read_msg($sock);
        return undef unless defined $type;
        return "$type $payload" if $type eq 'E';
        return $type if $type eq 'C' || $type eq 's';
    }
}

sub begin_pull_sql
{
    my ($n) = @_;
    return "SELECT morango.peer_begin(3, '5e000000-0000-0000-0000-00000000000$n', "
      . "'7a000000-0000-0000-0000-00000000000$n', 'facilitydata', false, '{f}', "
      . "'c0000000-0000-0000-0000-000000000001', '{\"super\": {}, \"sub\": {}}', '{}')";
}

# can this database serialize now, or does a lock holder block it?
sub serialize_now
{
    my ($ret, $out, $err) = $node->psql('postgres',
        "SET lock_timeout = '3s'; INSERT INTO facility VALUES (gen_random_uuid()::text, 'x'); "
          . "SELECT morango.serialize() > 0");
    return $ret == 0 && $out eq 't';
}

# ---- Execute without Sync ----

$node->safe_psql('postgres', q{INSERT INTO facility VALUES ('f1', 'North')});
my $sock = connect_raw('hostile');
is(execute_no_sync($sock, begin_pull_sql(1), 0), 'C', 'peer_begin runs to completion');
ok(serialize_now(), 'its serialize\'s instance lock is free before any Sync');
is($node->safe_psql('postgres',
        q{SELECT count(*) FROM morango.transfer_sessions WHERE id = '7a000000-0000-0000-0000-000000000001'}),
    '1', 'and its work is committed');
close $sock;

# ---- a suspended portal ----

$node->safe_psql('postgres', q{INSERT INTO facility VALUES ('f2', 'South')});
$sock = connect_raw('hostile');
is(execute_no_sync($sock, begin_pull_sql(2), 1), 's', 'an Execute with a row limit leaves the portal suspended');
ok($node->poll_query_until('postgres',
        q{SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = 'hostile')}),
    'the watchdog ends that connection');
my ($type, $payload) = read_msg($sock);
ok(!defined $type || ($type eq 'E' && $payload =~ /terminating connection/),
    'the client is told, or sees the connection close');
ok(serialize_now(), 'the instance lock is free');
is($node->safe_psql('postgres',
        q{SELECT count(*) FROM morango.transfer_sessions WHERE id = '7a000000-0000-0000-0000-000000000002'}),
    '0', 'the suspended call\'s work is rolled back');
like(slurp_file($node->logfile), qr/morango: ended the connection of role "hostile"/,
    'the server log says why');
close $sock;

# ---- the guard still lets an honest plain call through ----

$sock = connect_raw('hostile');
is(execute_no_sync($sock, "SELECT morango.peer_close('5e000000-0000-0000-0000-000000000001')", 0), 'C',
    'a plain call completes');
send_msg($sock, 'S', '');
close $sock;
is($node->safe_psql('postgres', 'SELECT count(*) FROM morango.check_invariants()'), '0', 'invariants hold');

$node->stop;
done_testing();

# 004_worker.pl
#
# Background syncs with real clusters:
#  - progress events arrive by LISTEN, in order;
#  - a running sync shows in pg_stat_activity, readably;
#  - cancel mid-transfer, then resume to completion;
#  - a peer that is down, then up: failures and backoff in morango.peers,
#    then success;
#  - the whole server killed mid-transfer: the sync completes on retry,
#    nothing lost or doubled;
#  - DROP DATABASE ... WITH (FORCE) while a worker sleeps and while it syncs;
#  - a sync scheduled with pg_cron runs and lands data.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $schema = q{
    CREATE EXTENSION IF NOT EXISTS morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE log (id int PRIMARY KEY, facility_id text NOT NULL REFERENCES facility, item text NOT NULL);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
    SELECT morango.register_model('log', 'facilitydata', partition => $$facility_id || ':log'$$);
};

my $a = PostgreSQL::Test::Cluster->new('peer');
$a->init;
$a->start;
$a->safe_psql('postgres', $schema);
$a->safe_psql('postgres', q{
    INSERT INTO facility VALUES ('f1', 'North');
    INSERT INTO log SELECT g, 'f1', 'item ' || g FROM generate_series(1, 1000) g;
});
my $peer = 'host=' . $a->host . ' port=' . $a->port . ' dbname=postgres';

my $b = PostgreSQL::Test::Cluster->new('laptop');
$b->init;
$b->append_conf('postgresql.conf', qq{
max_worker_processes = 16
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.host = '} . $b->host . q{'
});
$b->start;
$b->safe_psql('postgres', $schema);
$b->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

sub laptop_count { return $b->safe_psql('postgres', 'SELECT count(*) FROM log'); }

# --- progress events, in order
my ($ret, $out, $err) = $b->psql('postgres', qq{
    LISTEN morango_progress;
    SELECT morango.sync('$peer', 'facilitydata', direction => 'pull', chunk_size => 400) IS NOT NULL;
});
is($ret, 0, 'a sync with a listener');
my @events = map { /"event": "(\w+)", "status": "(\w+)"/ ? "$1.$2" : () }
  grep { /morango_progress/ } split /\n/, $out;
my @in_progress = grep { $_ eq 'transferring.in_progress' } @events;
is(scalar(@in_progress), 3, 'one progress event per chunk (1001 records, chunks of 400)');
my @distinct;
for my $e (@events) { push @distinct, $e unless @distinct && $distinct[-1] eq $e; }
is(join(' ', @distinct),
    'session.started queuing.started queuing.completed transferring.started transferring.in_progress '
      . 'transferring.completed dequeuing.started dequeuing.completed session.completed',
    'the events come in stage order');
is(laptop_count(), '1000', 'the data landed');

# --- a slow background sync: visible in pg_stat_activity; cancel; resume
$a->safe_psql('postgres', q{INSERT INTO log SELECT g, 'f1', 'item ' || g FROM generate_series(1001, 3000) g});
my $sid = $b->safe_psql('postgres', qq{
    SELECT morango.sync_start('$peer', 'facilitydata', direction => 'pull', chunk_size => 5)});
$b->poll_query_until('postgres', qq{
    SELECT records_transferred >= 100 FROM morango.syncs WHERE id = '$sid'});
is($b->safe_psql('postgres', q{
    SELECT application_name LIKE 'morango sync facilitydata %' AND query LIKE 'morango sync:%' OR query LIKE 'SELECT%'
    FROM pg_stat_activity WHERE backend_type = 'morango sync'}), 't',
    'the worker shows in pg_stat_activity with a readable name and activity');
is($b->safe_psql('postgres', qq{SELECT morango.sync_cancel('$sid')}), 't', 'cancel');
is($b->safe_psql('postgres', qq{SELECT status FROM morango.syncs WHERE id = '$sid'}), 'cancelled',
    'the sync shows as cancelled');
my $part = $b->safe_psql('postgres', qq{SELECT records_transferred FROM morango.syncs WHERE id = '$sid'});
ok($part > 0 && $part < 2000, "it stopped part way ($part records)");
my $again = $b->safe_psql('postgres', qq{
    SELECT morango.sync_start('$peer', 'facilitydata', direction => 'pull', chunk_size => 500)});
is($again, $sid, 'starting again resumes the same session');
is($b->safe_psql('postgres', qq{SELECT morango.sync_wait('$sid', '2 minutes')}), 'completed', 'and it completes');
is(laptop_count(), '3000', 'every record arrived once');

# --- the peer goes down, then comes back: failures and backoff are visible
$a->stop;
$sid = $b->safe_psql('postgres', qq{
    SET morango.retry_delay = '200ms'; SET morango.retry_limit = 50;
    SELECT morango.sync_start('$peer', 'facilitydata')});
$b->poll_query_until('postgres', q{
    SELECT consecutive_failures >= 2 AND next_retry_at IS NOT NULL AND last_error LIKE 'could not connect%'
    FROM morango.peers WHERE direction = 'both'});
pass('failures and the next retry show in morango.peers');
$a->start;
is($b->safe_psql('postgres', qq{SELECT morango.sync_wait('$sid', '2 minutes')}), 'completed',
    'once the peer is back, the retry succeeds');
is($b->safe_psql('postgres', q{SELECT consecutive_failures || ' ' || (next_retry_at IS NULL)
    FROM morango.peers WHERE direction = 'both'}), '0 true', 'and the failures are reset');

# --- the whole server killed in the middle of a transfer
$a->safe_psql('postgres', q{INSERT INTO log SELECT g, 'f1', 'item ' || g FROM generate_series(3001, 5000) g});
$sid = $b->safe_psql('postgres', qq{
    SELECT morango.sync_start('$peer', 'facilitydata', direction => 'pull', chunk_size => 5)});
$b->poll_query_until('postgres', qq{
    SELECT records_transferred >= 100 FROM morango.syncs WHERE id = '$sid'});
$b->stop('immediate');
$b->start;
is($b->safe_psql('postgres', qq{SELECT status FROM morango.syncs WHERE id = '$sid'}), 'interrupted',
    'after the crash the sync shows as interrupted');
is(laptop_count(), '3000', 'nothing of it was applied');
$again = $b->safe_psql('postgres', qq{
    SELECT morango.sync_start('$peer', 'facilitydata', direction => 'pull')});
is($b->safe_psql('postgres', qq{SELECT morango.sync_wait('$again', '2 minutes')}), 'completed',
    'a new start completes it');
is($again, $sid, 'resuming the same session');
is($b->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM log'), '5000|5000',
    'nothing lost or doubled');
is($b->safe_psql('postgres', 'SELECT count(*) FROM morango.buffer'), '0', 'no buffer left');

# --- DROP DATABASE while a worker sleeps between retries, and while it syncs
$b->safe_psql('postgres', 'CREATE DATABASE sleeper');
$b->safe_psql('sleeper', $schema);
$b->safe_psql('sleeper', q{
    SET morango.retry_delay = '10min';
    SELECT morango.sync_start('host=127.0.0.1 port=1 dbname=nowhere', 'facilitydata')});
$b->poll_query_until('sleeper', q{SELECT consecutive_failures = 1 FROM morango.peers});
$b->safe_psql('postgres', 'DROP DATABASE sleeper WITH (FORCE)');
pass('DROP DATABASE of a database whose worker sleeps returns');
$b->safe_psql('postgres', 'CREATE DATABASE busy');
$b->safe_psql('busy', $schema);
$a->safe_psql('postgres', q{INSERT INTO log SELECT g, 'f1', 'item ' || g FROM generate_series(5001, 8000) g});
$sid = $b->safe_psql('busy', qq{
    SELECT morango.sync_start('$peer', 'facilitydata', direction => 'pull', chunk_size => 5)});
$b->poll_query_until('busy', qq{SELECT records_transferred >= 50 FROM morango.syncs WHERE id = '$sid'});
$b->safe_psql('postgres', 'DROP DATABASE busy WITH (FORCE)');
pass('DROP DATABASE of a database whose worker syncs returns');
$b->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'morango sync'});
pass('and the workers are gone');

# --- a sync scheduled with pg_cron
$a->safe_psql('postgres', q{INSERT INTO log VALUES (9999, 'f1', 'scheduled')});
my $job = $b->safe_psql('postgres', qq{SELECT morango.schedule('$peer', '* * * * *', 'facilitydata', direction => 'pull')});
ok($job > 0, 'scheduled through pg_cron');
$b->poll_query_until('postgres', q{SELECT count(*) = 1 FROM log WHERE id = 9999})
  or diag($b->safe_psql('postgres', 'SELECT status, return_message FROM cron.job_run_details'));
is($b->safe_psql('postgres', q{SELECT item FROM log WHERE id = 9999}), 'scheduled', 'the scheduled sync landed data');
is($b->safe_psql('postgres', qq{SELECT morango.unschedule('$peer', 'facilitydata', direction => 'pull')}), 't',
    'unscheduled');

# the invariants hold after all that (doc/invariants.md)
is($a->safe_psql('postgres', 'SELECT invariant || \': \' || detail FROM morango.check_invariants()'), '',
    'invariants hold on a');
is($b->safe_psql('postgres', 'SELECT invariant || \': \' || detail FROM morango.check_invariants()'), '',
    'invariants hold on b');

$b->stop;
$a->stop;
done_testing();

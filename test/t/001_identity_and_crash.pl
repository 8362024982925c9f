# 001_identity_and_crash.pl
#
# Things that need real clusters and processes that die:
#  - a database copied with CREATE DATABASE ... TEMPLATE makes a new
#    instance id before it stamps anything (versions are never reused);
#  - a database restored from pg_dump into another cluster has an identity
#    of its own and keeps the store, counters and version vectors;
#  - a server killed while a serialize holds the counter: after restart no
#    counter is lost or reused, and the changes that were committed but
#    not stamped still wait for serialize.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $a = PostgreSQL::Test::Cluster->new('a');
$a->init;
$a->start;
$a->safe_psql('postgres', 'CREATE DATABASE db1');
$a->safe_psql('db1', q{
    CREATE EXTENSION morango;
    CREATE TABLE item (id int PRIMARY KEY, v text);
    SELECT morango.register_model('item', 'p', partition => $$'part'$$);
    INSERT INTO item SELECT g, 'v' || g FROM generate_series(1, 10) g;
    SELECT morango.serialize();
});
my $inst1 = $a->safe_psql('db1', 'SELECT morango.instance_id()');

# --- a template copy rotates its identity at the first counter it takes
$a->safe_psql('postgres', 'CREATE DATABASE db2 TEMPLATE db1');
is($a->safe_psql('db2', 'SELECT morango.instance_id()'), $inst1,
    'a template copy starts with the identity it was copied with');
my ($ret, $out, $err) = $a->psql('db2',
    q{INSERT INTO item VALUES (11, 'copy'); SELECT morango.serialize();});
is($ret, 0, 'serialize in the copy works');
like($err, qr/copied or restored; making a new instance id/, 'the copy notices it is a copy');
my $inst2 = $a->safe_psql('db2', 'SELECT morango.instance_id()');
isnt($inst2, $inst1, 'the copy has a new instance id');
is($a->safe_psql('db2',
    q{SELECT last_saved_instance = morango.instance_id() AND last_saved_counter = 1
      FROM morango.store WHERE source_id = '11'}),
    't', 'the copy stamps with its own instance, counting from 1');
is($a->safe_psql('db1', 'SELECT morango.instance_id()'), $inst1,
    'the original keeps its identity');

# --- pg_dump into another cluster
my $b = PostgreSQL::Test::Cluster->new('b');
$b->init;
$b->start;
$b->safe_psql('postgres', 'CREATE DATABASE restored');
my $dump = $a->basedir . '/db1.sql';
$a->command_ok([ 'pg_dump', '-d', $a->connstr('db1'), '-f', $dump ], 'pg_dump of db1');
$b->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $b->connstr('restored'), '-f', $dump ],
    'restore into another cluster');
isnt($b->safe_psql('restored', 'SELECT morango.instance_id()'), $inst1,
    'a restored database has an identity of its own');
is($b->safe_psql('restored',
    q{SELECT count(*) FILTER (WHERE last_saved_instance = '} . $inst1 . q{') || '/' || count(*)
      FROM morango.store}),
    '10/10', 'the store and its versions come along');
is($b->safe_psql('restored',
    q{SELECT count(*) FROM morango.record_max_counters WHERE instance_id = '} . $inst1 . q{'}),
    '10', 'so do the version vectors');
$b->safe_psql('restored', q{UPDATE item SET v = 'after restore' WHERE id = 1; SELECT morango.serialize();});
is($b->safe_psql('restored',
    q{SELECT last_saved_instance = morango.instance_id() FROM morango.store WHERE source_id = '1'}),
    't', 'the trigger works after the restore');
$b->stop;

# --- a crash while serialize holds the counter
my $before = $a->safe_psql('db1', 'SELECT counter FROM morango.instances WHERE current');
$a->safe_psql('db1', q{INSERT INTO item VALUES (20, 'committed, not stamped')});
my $bg = $a->background_psql('db1');
$bg->query_safe('BEGIN');
$bg->query_safe(q{INSERT INTO item VALUES (21, 'never committed')});
$bg->query_safe('SELECT morango.serialize()');
# the serialize above holds the instance row; a concurrent one must wait for it
$a->poll_query_until('db1', q{
    SELECT count(*) = 0 FROM pg_locks WHERE NOT granted}, 't');
$a->stop('immediate');
$bg->{run}->kill_kill;
$a->start;

is($a->safe_psql('db1', 'SELECT counter FROM morango.instances WHERE current'), $before,
    'the counter taken by the killed serialize is not kept');
is($a->safe_psql('db1', q{SELECT count(*) FROM item WHERE id = 21}), '0',
    'the uncommitted row is gone');
is($a->safe_psql('db1', q{SELECT count(*) FROM morango.changes WHERE key = '[20]'}), '1',
    'the committed change still waits for serialize');
is($a->safe_psql('db1', q{SELECT count(*) FROM morango.changes WHERE key = '[21]'}), '0',
    'the uncommitted change left no trace');
$a->safe_psql('db1', 'SELECT morango.serialize()');
is($a->safe_psql('db1',
    q{SELECT last_saved_counter = } . ($before + 1) . q{ FROM morango.store WHERE source_id = '20'}),
    't', 'the next serialize stamps it with the next counter');
is($a->safe_psql('db1',
    q{SELECT max(last_saved_counter) = (SELECT counter FROM morango.instances WHERE current)
      FROM morango.store WHERE last_saved_instance = morango.instance_id()}),
    't', 'no stamped counter is above the instance counter');

# the invariants hold after all that (doc/invariants.md)
is($a->safe_psql('db1', 'SELECT invariant || \': \' || detail FROM morango.check_invariants()'), '',
    'invariants hold on a');

$a->stop;
done_testing();

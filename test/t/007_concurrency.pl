# 007_concurrency.pl
#
# Application writes while syncs run, on both sides (issue 7, item 4).
#
# A server and a laptop each run pgbench with custom scripts that insert,
# update and delete rows of a registered table, for a bounded time at a
# bounded rate, while the laptop runs morango.sync() again and again
# (pull, push, both; small chunks, small deserialize batches on both
# sides).  The workload never conflicts with itself in plain PostgreSQL
# (every transaction locks rows in ascending key order), so any failed
# transaction, any error, or a deadlock in either server log is a finding.
#
# Who writes what:
#  - ids 1..10 (shared): both sides append a tag of their own to the row
#    (item = item || ',S123'), so a value lists every write it includes;
#  - ids 11..20 (shared, absent at first): both sides insert them (or
#    append to them) and then append to a row of 1..10 in the same
#    transaction, so an application transaction holding a new key waits
#    for a row a deserialize wrote, while that deserialize may come to the
#    same key (test/isolation/specs/deserialize_insert_deadlock.spec);
#  - ids 1000001..1000300: the server's own (upserts, updates, soft and
#    hard deletes); ids 2000001..2000300: the laptop's own;
#  - now and then the application runs morango.serialize() itself, so
#    that syncs meet versions made on both sides: conflicts.
# Each side journals every write in an unregistered table, in the same
# transaction, ordered by a sequence taken after the row lock.
#
# After the writers stop and a quiet round of syncs:
#  - both sides hold the same application rows and the same store;
#  - each owned row is what its owner's journal says it last wrote;
#  - no write to a shared row is lost: every tag either side committed is
#    in the final value or in a value kept in the record's conflict
#    history (both sides raise morango.max_conflict_entries and
#    max_conflict_bytes, which would drop the oldest, so that it is whole);
#  - no buffer rows are left, no dirty record, and morango.check_invariants()
#    is empty on both sides.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $seconds = 20;    # how long the writers write
my $rate    = 120;   # transactions per second, per side
my $clients = 4;     # pgbench clients per side

my $schema = q{
    CREATE EXTENSION morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE log (id int PRIMARY KEY, facility_id text NOT NULL REFERENCES facility, item text NOT NULL);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
    SELECT morango.register_model('log', 'facilitydata', partition => $$facility_id || ':log'$$);
    -- what the application wrote, not synced
    CREATE TABLE journal (seq bigserial PRIMARY KEY, id int NOT NULL, op text NOT NULL, item text);
    CREATE SEQUENCE tag;
    -- small batches, so that a deserialize has several
    ALTER DATABASE postgres SET morango.batch_size = 5;
};

# the conflict history kept whole: the oracle below looks for every write in it
my $whole_history = "morango.max_conflict_entries = 1000000\nmorango.max_conflict_bytes = '255MB'";

my $server = PostgreSQL::Test::Cluster->new('server');
$server->init;
$server->append_conf('postgresql.conf', "log_lock_waits = on\ndeadlock_timeout = 200ms\n$whole_history");
$server->start;
$server->safe_psql('postgres', $schema);

my $laptop = PostgreSQL::Test::Cluster->new('laptop');
$laptop->init;
$laptop->append_conf('postgresql.conf',
	"max_worker_processes = 16\nlog_lock_waits = on\ndeadlock_timeout = 200ms\n$whole_history");
$laptop->start;
$laptop->safe_psql('postgres', $schema);

my $peer = 'host=' . $server->host . ' port=' . $server->port . ' dbname=postgres';
sub sync_sql
{
	my ($direction) = @_;
	return qq{SELECT morango.sync('$peer', 'facilitydata', direction => '$direction', chunk_size => 7) IS NOT NULL};
}

# the starting rows: the shared ones and some of each side's own, made on
# the server and pulled by the laptop; the server journals its own, the
# laptop takes over its own (as if it had written them) by journaling them
$server->safe_psql('postgres', q{
    INSERT INTO facility VALUES ('f1', 'North');
    INSERT INTO log SELECT g, 'f1', 'start' FROM generate_series(1, 10) g;
    INSERT INTO log SELECT g, 'f1', 'start ' || g FROM generate_series(1000001, 1000300, 2) g;
    INSERT INTO log SELECT g, 'f1', 'start ' || g FROM generate_series(2000001, 2000300, 2) g;
    INSERT INTO journal (id, op, item) SELECT g, 'set', 'start ' || g FROM generate_series(1000001, 1000300, 2) g;
});
$laptop->safe_psql('postgres', sync_sql('both'));
$laptop->safe_psql('postgres', q{
    INSERT INTO journal (id, op, item) SELECT id, 'set', item FROM log WHERE id > 2000000 ORDER BY id;
});
is($laptop->safe_psql('postgres', 'SELECT count(*) FROM log'), '310', 'the laptop starts with the server\'s rows');

# pgbench scripts, one set per side: T is the side's tag letter, LO..HI
# its own ids
my %scripts = (
	# a shared row: append this write's tag
	shared => q{
\set id random(1, 10)
WITH u AS (UPDATE log SET item = item || ',T' || nextval('tag') WHERE id = :id RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'tag', substring(item from '[^,]*$') FROM u;
},
	# an own row: insert or overwrite
	upsert => q{
\set id random(LO, HI)
WITH u AS (INSERT INTO log VALUES (:id, 'f1', 'T' || nextval('tag'))
           ON CONFLICT (id) DO UPDATE SET item = excluded.item RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'set', item FROM u;
},
	update => q{
\set id random(LO, HI)
WITH u AS (UPDATE log SET item = 'T' || nextval('tag') WHERE id = :id RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'set', item FROM u;
},
	delete => q{
\set id random(LO, HI)
WITH d AS (DELETE FROM log WHERE id = :id RETURNING id)
INSERT INTO journal (id, op) SELECT id, 'del' FROM d;
},
	hard_delete => q{
\set id random(LO, HI)
BEGIN;
SET LOCAL morango.hard_delete = on;
WITH d AS (DELETE FROM log WHERE id = :id RETURNING id)
INSERT INTO journal (id, op) SELECT id, 'del' FROM d;
COMMIT;
},
	# a shared new key (both sides insert the same ones: deserialize may
	# meet an insert not committed yet), then a shared row, in one
	# transaction
	shared_insert => q{
\set k random(11, 20)
\set s random(1, 10)
BEGIN;
WITH u AS (INSERT INTO log VALUES (:k, 'f1', 'T' || nextval('tag'))
           ON CONFLICT (id) DO UPDATE SET item = log.item || ',' || excluded.item RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'tag', substring(item from '[^,]*$') FROM u;
WITH u AS (UPDATE log SET item = item || ',T' || nextval('tag') WHERE id = :s RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'tag', substring(item from '[^,]*$') FROM u;
COMMIT;
},
	# the application serializes too (a sync then meets versions made on
	# both sides since the last one: conflicts)
	serialize => q{
SELECT morango.serialize();
},
	# several rows in one transaction, in ascending key order: a shared
	# one, then two own ones
	several => q{
\set s random(1, 10)
\set id random(LO, HI - 1)
BEGIN;
WITH u AS (UPDATE log SET item = item || ',T' || nextval('tag') WHERE id = :s RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'tag', substring(item from '[^,]*$') FROM u;
WITH u AS (UPDATE log SET item = 'T' || nextval('tag') WHERE id = :id RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'set', item FROM u;
WITH u AS (INSERT INTO log VALUES (:id + 1, 'f1', 'T' || nextval('tag'))
           ON CONFLICT (id) DO UPDATE SET item = excluded.item RETURNING id, item)
INSERT INTO journal (id, op, item) SELECT id, 'set', item FROM u;
COMMIT;
},
);
my %weights = (shared => 4, shared_insert => 2, serialize => 1, upsert => 3, update => 3, delete => 2, hard_delete => 1, several => 2);

my $dir = PostgreSQL::Test::Utils::tempdir;
sub script_args
{
	my ($tag, $lo, $hi) = @_;
	my @args;
	for my $name (sort keys %scripts)
	{
		my $text = $scripts{$name};
		$text =~ s/\bT'/$tag'/g;
		$text =~ s/\bLO\b/$lo/g;
		$text =~ s/\bHI\b/$hi/g;
		my $file = "$dir/$tag-$name.sql";
		open my $fh, '>', $file or die "$file: $!";
		print $fh $text;
		close $fh;
		push @args, '-f', "$file\@$weights{$name}";
	}
	return @args;
}

sub start_pgbench
{
	my ($node, $tag, $lo, $hi) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('pgbench', '-n', '-h', $node->host, '-p', $node->port,
		'-c', $clients, '-j', 2, '-T', $seconds, '-R', $rate,
		script_args($tag, $lo, $hi), 'postgres');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, node => $node };
}

my $started = time;
my @benches = (start_pgbench($server, 'S', 1000001, 1000300),
	start_pgbench($laptop, 'L', 2000001, 2000300));

# syncs while they write, in every direction
my @directions = qw(both pull push);
my ($syncs, $failed_syncs) = (0, 0);
while (grep { $_->{h}->pumpable } @benches)
{
	last if time - $started > $seconds + 60;    # a bound, should pgbench hang
	my $direction = $directions[ $syncs % 3 ];
	my ($ret, $out, $err) = $laptop->psql('postgres', sync_sql($direction));
	$syncs++;
	if ($ret != 0)
	{
		$failed_syncs++;
		diag("sync $syncs ($direction) failed: $err");
	}
	$_->{h}->pump_nb for grep { $_->{h}->pumpable } @benches;
}
diag("$syncs syncs while the applications wrote");
cmp_ok($syncs, '>=', 3, 'several syncs ran while the applications wrote');
is($failed_syncs, 0, 'no sync failed');
my $stats = $laptop->safe_psql('postgres', q{
    SELECT count(*) || ' transfers, ' || sum(records_total) || ' records, at most ' || max(records_total)
           || ' in one, ' || sum(conflicts) || ' conflicts; '
           || count(*) FILTER (WHERE records_total > 14) || ' of several chunks'
    FROM morango.transfer_sessions});
diag($stats);
like($stats, qr/; [1-9]\d* of several chunks/, 'some transfers took several chunks');

for my $b (@benches)
{
	my $name = $b->{node}->name;
	$b->{h}->finish;
	my $rc = ($b->{h}->results)[0];
	my ($out, $err) = (${ $b->{out} }, ${ $b->{err} });
	is($rc, 0, "pgbench on the $name exits with 0") or diag($out . $err);
	my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	cmp_ok($processed // 0, '>', 100, "pgbench on the $name processed transactions");
	is($failed // 0, 0, "pgbench on the $name: no failed transaction");
	unlike($err, qr/ERROR|FATAL|aborted/, "pgbench on the $name: no error") or diag($err);
}

# the quiet round: nothing writes any more
$laptop->safe_psql('postgres', sync_sql('both'));
$laptop->safe_psql('postgres', sync_sql('both'));

my $rows_sql = q{SELECT string_agg(id || '=' || item, E'\n' ORDER BY id) FROM log};
my $rows = $laptop->safe_psql('postgres', $rows_sql);
is($rows, $server->safe_psql('postgres', $rows_sql), 'both sides hold the same rows');

my $store_sql = q{SELECT md5(string_agg(concat_ws('|', id, serialized, deleted, hard_deleted,
    conflicting_serialized_data, last_saved_instance, last_saved_counter), ',' ORDER BY id)) FROM morango.store};
is($laptop->safe_psql('postgres', $store_sql), $server->safe_psql('postgres', $store_sql),
	'both stores are the same');

# each side's own rows: what its journal says it wrote last
for my $side ([ $server, 1000000 ], [ $laptop, 2000000 ])
{
	my ($node, $base) = @$side;
	my $expect = $node->safe_psql('postgres', qq{
        SELECT string_agg(id || '=' || item, E'\n' ORDER BY id)
        FROM (SELECT DISTINCT ON (id) id, op, item FROM journal
              WHERE id > $base AND id <= $base + 300 ORDER BY id, seq DESC) j
        WHERE op = 'set'});
	my $have = $laptop->safe_psql('postgres', qq{
        SELECT string_agg(id || '=' || item, E'\n' ORDER BY id) FROM log
        WHERE id > $base AND id <= $base + 300});
	is($have, $expect, 'the ' . $node->name . "'s own rows are what it wrote last");
}

# the shared rows: no tag lost (in the final value or in the conflict history)
my $kept_sql = q{
    SELECT DISTINCT t FROM morango.store s,
        LATERAL (SELECT s.serialized->>'item'
                 UNION ALL SELECT h->>'item' FROM jsonb_array_elements(s.conflicting_serialized_data) h) v(item),
        LATERAL regexp_split_to_table(v.item, ',') t
    WHERE s.model_name = 'log' AND (s.serialized->>'id')::int <= 20};
my %kept = map { $_ => 1 } split /\n/, $server->safe_psql('postgres', $kept_sql);
my %final = map { $_ => 1 } map { split /,/ } map { (split /=/, $_, 2)[1] }
  grep { /^(\d+)=/ && $1 <= 20 } split /\n/, $rows;
for my $node ($server, $laptop)
{
	my @tags = split /\n/, $node->safe_psql('postgres', q{SELECT item FROM journal WHERE op = 'tag' ORDER BY seq});
	my @lost = grep { !$kept{$_} } @tags;
	my @history = grep { !$final{$_} } @tags;
	cmp_ok(scalar(@tags), '>', 50, 'the ' . $node->name . ' wrote the shared rows');
	is(scalar(@lost), 0, 'no write of the ' . $node->name . ' to a shared row is lost')
	  or diag('lost: ' . join(' ', @lost[0 .. ($#lost < 20 ? $#lost : 19)]));
	diag(scalar(@history) . ' of ' . scalar(@tags) . ' shared writes of the ' . $node->name
		  . ' are only in the conflict history');
}

for my $node ($server, $laptop)
{
	my $name = $node->name;
	is($node->safe_psql('postgres', q{
        SELECT (SELECT count(*) FROM morango.buffer) + (SELECT count(*) FROM morango.record_max_counter_buffer)}),
		'0', "$name: no buffer rows left");
	is($node->safe_psql('postgres', q{
        SELECT count(*) FROM morango.records WHERE dirty_bit}), '0', "$name: no record left dirty");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM morango.changes'), '0',
		"$name: no change left unserialized");
	is($node->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()}),
		'', "$name: the invariants hold");
	my $log = slurp_file($node->logfile);
	my @deadlocks = grep { /deadlock detected/ } split /\n/, $log;
	is(scalar(@deadlocks), 0, "$name: no deadlock in the server log") or diag(join "\n", @deadlocks);
	# a deadlock deserialize found and gave up on (log_lock_waits) is fine
	diag("$name: " . scalar(grep { /detected deadlock while waiting/ } split /\n/, $log)
		  . ' deadlocks found by deserialize and given up');
	my @errors = grep { /\b(ERROR|FATAL|PANIC):/ } split /\n/, $log;
	is(scalar(@errors), 0, "$name: no error in the server log") or diag(join "\n", @errors[0 .. ($#errors < 30 ? $#errors : 29)]);
}
diag(sprintf('%.1f s', time - $started));

$laptop->stop;
$server->stop;
done_testing();

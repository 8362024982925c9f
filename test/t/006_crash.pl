# 006_crash.pl
#
# A sync that fails or crashes at every fault point (src/fault.c), on
# either side, then runs again:
#  - points: serialize, queue, send_chunk (the 2nd), receive_chunk (the
#    2nd), dequeue, deserialize (after the 2nd batch);
#  - sides: the initiating laptop (its sync worker) and the server it syncs
#    with (the backend serving the peer API);
#  - actions: an error, a kill -9 of the process before its transaction
#    commits, and a kill -9 right after it commits (the postmaster then
#    restarts the whole server, as after a crash).
# Every scenario syncs in both directions with fresh inserts, updates and
# deletes on both sides, so every point is reached on both sides.  After
# the failed attempt the session history says what happened; after the
# retry both sides hold exactly the expected rows and the same store, no
# buffer rows are left, the one sync session was resumed and completed,
# and the invariants of doc/invariants.md hold.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $schema = q{
    CREATE EXTENSION morango;
    CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE log (id int PRIMARY KEY, facility_id text NOT NULL REFERENCES facility, item text NOT NULL);
    SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
    SELECT morango.register_model('log', 'facilitydata', partition => $$facility_id || ':log'$$);
    -- small batches, so that a deserialize has several
    ALTER DATABASE postgres SET morango.batch_size = 10;
};

my $server = PostgreSQL::Test::Cluster->new('server');
$server->init;
# a killed process restarts the server, as after a crash
$server->append_conf('postgresql.conf', 'restart_after_crash = on');
$server->start;
$server->safe_psql('postgres', $schema);

my $laptop = PostgreSQL::Test::Cluster->new('laptop');
$laptop->init;
$laptop->append_conf('postgresql.conf', "max_worker_processes = 16\nrestart_after_crash = on");
$laptop->start;
$laptop->safe_psql('postgres', $schema);
my $peer = 'host=' . $server->host . ' port=' . $server->port . ' dbname=postgres';
my $sync = qq{SELECT morango.sync('$peer', 'facilitydata', chunk_size => 10) IS NOT NULL};

# the expected rows: id -> item
my %rows;
$server->safe_psql('postgres', q{
    INSERT INTO facility VALUES ('f1', 'North');
    INSERT INTO log SELECT g, 'f1', 'item ' || g FROM generate_series(1, 40) g;
});
$rows{$_} = "item $_" for 1 .. 40;
$laptop->safe_psql('postgres', $sync);

sub wait_up
{
	my ($node) = @_;
	$node->poll_query_until('postgres', 'SELECT true')
	  or die $node->name . ' did not come back';
}

# Inserts, updates and deletes on one side: even ids are the server's,
# odd ids the laptop's, so that the two sides never edit the same record
# in one round and the expected result is plain.
sub edit
{
	my ($node, $parity, $round, $tag) = @_;
	my @mine = grep { $_ % 2 == $parity } sort { $a <=> $b } keys %rows;
	my @upd = @mine[0 .. 4];
	my @del = @mine[5 .. 6];
	my $base = 1000 * $round + $parity;
	my @new = map { $base + 2 * $_ } 0 .. 24;
	$node->safe_psql('postgres', sprintf(q{
        UPDATE log SET item = '%s' WHERE id IN (%s);
        DELETE FROM log WHERE id IN (%s);
        INSERT INTO log SELECT g, 'f1', 'new ' || g FROM unnest(ARRAY[%s]) g;
    }, $tag, join(',', @upd), join(',', @del), join(',', @new)));
	$rows{$_} = $tag for @upd;
	delete $rows{$_} for @del;
	$rows{$_} = "new $_" for @new;
}

my $expected_rows;
sub rows_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{SELECT string_agg(id || '=' || item, ',' ORDER BY id) FROM log});
}

my $store_sql = q{SELECT md5(string_agg(concat_ws('|', id, serialized, deleted, hard_deleted,
    last_saved_instance, last_saved_counter), ',' ORDER BY id)) FROM morango.store};

my $round = 0;
for my $action (qw(error kill kill_after_commit))
{
	for my $side (qw(laptop server))
	{
		for my $point ('serialize', 'queue', 'send_chunk:2', 'receive_chunk:2', 'dequeue', 'deserialize:2')
		{
			$round++;
			my ($node, $other) = $side eq 'laptop' ? ($laptop, $server) : ($server, $laptop);
			my $what = "$point:$action on the $side";
			edit($server, 0, $round, "a$round");
			edit($laptop, 1, $round, "b$round");

			$node->safe_psql('postgres', "ALTER DATABASE postgres SET morango.fault_injection = '$point:$action'");
			my ($ret, $out, $err) = $laptop->psql('postgres', $sync);
			isnt($ret, 0, "$what: the sync fails");
			wait_up($node);
			$node->safe_psql('postgres', 'ALTER DATABASE postgres RESET morango.fault_injection');

			# what the laptop's history says about the failed attempt
			my $history = $laptop->safe_psql('postgres', q{
                SELECT status || ':' || COALESCE(last_error, '') FROM morango.sync_sessions
                WHERE NOT is_server AND active});
			my ($p) = split /:/, $point;
			if ($action eq 'error')
			{
				like($err, qr/injected fault at $p/, "$what: the error says where");
				like($history, qr/^errored:.*injected fault at $p/, "$what: so does the session");
			}
			elsif ($side eq 'server')
			{
				like($history, qr/^errored:.+/, "$what: the session records the lost peer");
			}
			else
			{
				is($history, 'started:', "$what: the session is left as it was when the laptop died");
			}

			# again, without the fault
			$laptop->safe_psql('postgres', $sync);
			my $expect = join(',', map { "$_=$rows{$_}" } sort { $a <=> $b } keys %rows);
			is(rows_of($laptop), $expect, "$what: the laptop holds exactly the expected rows");
			is(rows_of($server), $expect, "$what: and so does the server");
			is($laptop->safe_psql('postgres', $store_sql), $server->safe_psql('postgres', $store_sql),
				"$what: both stores are the same");
			is($laptop->safe_psql('postgres', 'SELECT count(*) FROM morango.buffer')
				  + $server->safe_psql('postgres', 'SELECT count(*) FROM morango.buffer')
				  + $laptop->safe_psql('postgres', 'SELECT count(*) FROM morango.record_max_counter_buffer')
				  + $server->safe_psql('postgres', 'SELECT count(*) FROM morango.record_max_counter_buffer'),
				0, "$what: no buffer rows left");
			is($laptop->safe_psql('postgres', q{
                SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'completed' AND NOT active
                                                            AND last_error IS NULL)
                FROM morango.sync_sessions WHERE NOT is_server}),
				($round + 1) . ' ' . ($round + 1), "$what: the failed session was resumed and completed");
			is($server->safe_psql('postgres', q{SELECT count(*) FROM morango.sync_sessions WHERE active}),
				'0', "$what: the server closed it too");
			is($server->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()})
				  . $laptop->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()}),
				'', "$what: the invariants hold on both sides");
		}
	}
}

# A push that fails after the peer stored its last chunk but before the
# laptop recorded it as sent: the retry has nothing left to send, and must
# still count what the peer holds (found by 008_convergence.pl).
$laptop->safe_psql('postgres', q{INSERT INTO log VALUES (99001, 'f1', 'last'), (99003, 'f1', 'chunk')});
$laptop->safe_psql('postgres', q{ALTER DATABASE postgres SET morango.fault_injection = 'send_chunk:2:error'});
my ($ret) = $laptop->psql('postgres',
	qq{SELECT morango.sync('$peer', 'facilitydata', direction => 'push', chunk_size => 100)});
isnt($ret, 0, 'a one-chunk push fails after sending its chunk');
$laptop->safe_psql('postgres', 'ALTER DATABASE postgres RESET morango.fault_injection');
$laptop->safe_psql('postgres',
	qq{SELECT morango.sync('$peer', 'facilitydata', direction => 'push', chunk_size => 100)});
is($laptop->safe_psql('postgres', q{
    SELECT string_agg(records_transferred || ' of ' || records_total, ', ' ORDER BY started_at)
    FROM morango.transfer_sessions
    WHERE push AND sync_session_id = (SELECT id FROM morango.sync_sessions ORDER BY started_at DESC LIMIT 1)}),
	'2 of 2, 0 of 0', 'the retry counts what the peer holds as sent (then pushes afresh: nothing new)');
is($laptop->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()}),
	'', 'and the invariants hold');

# A resumed sync goes on with the snapshot its failed attempt took, then
# takes a fresh one: changes made between the two attempts are not left
# for the next sync (found by 008_convergence.pl).
for my $case (['push', $laptop, $server, 'queue:error', 99101], ['pull', $server, $laptop, 'receive_chunk:error', 99201])
{
	my ($direction, $writer, $reader, $fault, $id) = @$case;
	my $sync_dir = qq{SELECT morango.sync('$peer', 'facilitydata', direction => '$direction')};
	$writer->safe_psql('postgres', qq{INSERT INTO log VALUES ($id, 'f1', 'before the failure')});
	$laptop->safe_psql('postgres', qq{ALTER DATABASE postgres SET morango.fault_injection = '$fault'});
	($ret) = $laptop->psql('postgres', $sync_dir);
	isnt($ret, 0, "a $direction fails at $fault");
	$laptop->safe_psql('postgres', 'ALTER DATABASE postgres RESET morango.fault_injection');
	$writer->safe_psql('postgres', sprintf(q{INSERT INTO log VALUES (%d, 'f1', 'between the attempts')}, $id + 2));
	$laptop->safe_psql('postgres', $sync_dir);
	is($reader->safe_psql('postgres', qq{SELECT string_agg(item, ', ' ORDER BY id) FROM log WHERE id IN ($id, $id + 2)}),
		'before the failure, between the attempts', "the resumed $direction brings both changes");
}
is($laptop->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()})
	  . $server->safe_psql('postgres', q{SELECT string_agg(invariant, ',') FROM morango.check_invariants()}),
	'', 'the invariants hold on both sides');

$laptop->stop;
$server->stop;
done_testing();

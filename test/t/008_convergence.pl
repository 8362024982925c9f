# 008_convergence.pl
#
# Convergence under random schedules (a property test).
#
# Five databases in one cluster: d0, d1, d2 hold everything; d3 holds the
# partitions under 'f1'; d4 holds only 'f1:a' (a sub-partition of d3's).
# For each seed, a random schedule of inserts, updates, soft deletes, hard
# deletes, re-creates (an insert of a soft-deleted key) and syncs between
# random pairs, with random directions, filters (any filter both sides
# hold) and chunk sizes, some of them with an injected error or kill
# (src/fault.c) on either side, some retried at once and some left
# unfinished.  Then a final round of syncs (the partial peers up, the full
# peers around a ring twice, the partial peers down), and the oracle
# (doc/invariants.md, "Convergence"):
#
#  C1 Convergence: every database holding a partition has the same store
#     rows there (data, flags, last saved version, version vector), and
#     no store rows outside what it holds.
#  C2 The application tables are what the store says: a live record's row
#     with its data, no row for a deleted one, no row without a record.
#  C3 Nothing invented: the final version of each record is a version its
#     instance wrote (captured after every step on the database that
#     wrote it), with the same data and flags; one version (instance,
#     counter, record) never carries two different contents.
#  C4 Nothing lost: the final version vector of each record covers every
#     version ever written of it.
#  C5 No lost update: no version written by a database that had already
#     seen the final version (its version vector covers the final one) -
#     the final version is never an ancestor of another.
#  C6 morango.check_invariants() is empty everywhere; no buffer rows
#     outside unfinished transfer sessions.
#
# A hostile peer takes part too (issue 12): a role granted the peer API,
# not a superuser, that at random steps attacks a random database through
# it: forged partitions, another role's sessions, counters that cannot be
# real, an oversized chunk, a call inside a transaction block, more open
# transfers than its quota, an oversized filter.  Every attack must be
# refused (its SQLSTATE is checked) and leave the target's store, version
# vectors, database max counters and table as they were; the oracle then
# holds as without it.
#
# The seeds come from MORANGO_SEEDS (comma-separated) or a fixed list; the
# number of steps from MORANGO_STEPS.  A failing seed is printed so that it
# can be replayed:
#   MORANGO_SEEDS=<seed> make installcheck PROVE_TESTS=test/t/008_convergence.pl
# (MORANGO_KEEP_DIR=<dir> also keeps a copy of the failing seed's cluster).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MIME::Base64;
use Compress::Zlib;

my @seeds = split /,/, ($ENV{MORANGO_SEEDS} || '1,2,3,4,5,6');
my $steps = $ENV{MORANGO_STEPS} || 60;

my $node = PostgreSQL::Test::Cluster->new('ring');
$node->init;
$node->append_conf('postgresql.conf', "max_worker_processes = 32\nrestart_after_crash = on\n"
	  . "max_connections = 60");
$node->start;

my @dbs = map { "d$_" } 0 .. 4;
# what each database holds: undef is everything
my %holds = (d0 => undef, d1 => undef, d2 => undef, d3 => 'f1', d4 => 'f1:a');
my @parts = ('f1:a', 'f1:b', 'f2:a', 'f2:b');
my @filters_full = (undef, 'f1', 'f2', 'f1:a', 'f1:b', 'f2:b');

my $schema = q{
    CREATE EXTENSION morango;
    CREATE TABLE item (id text PRIMARY KEY, part text NOT NULL, val text NOT NULL);
    SELECT morango.register_model('item', 'p', partition => 'part');
    SELECT morango.grant_peer('hostile');
};
$node->safe_psql('postgres', 'CREATE ROLE hostile LOGIN');

sub q1 { my ($db, $sql) = @_; return $node->safe_psql($db, $sql); }

# a store record's version vector, as a json object (in queries on store s)
my $vv_sql = q{(SELECT jsonb_object_agg(r.instance_id, r.counter) FROM morango.record_max_counters r
                WHERE r.record_id = s.id)::text};

sub wait_up
{
	$node->poll_query_until('postgres', 'SELECT true') or die 'the cluster did not come back';
}

sub within
{
	my ($part, $prefix) = @_;
	return !defined($prefix) || index($part, $prefix) == 0;
}

# the filters a sync between two databases may use: within what both hold
sub filters_for
{
	my ($x, $y) = @_;
	return grep {
		my $f = $_;
		my $ok = 1;
		for my $h ($holds{$x}, $holds{$y})
		{
			next unless defined $h;
			$ok = 0 unless defined($f) && index($f, $h) == 0;
		}
		$ok;
	} (@filters_full, 'f1:a');
}

my @log;    # the schedule of the seed running, printed if it fails

sub run_seed
{
	my ($seed) = @_;
	srand($seed);
	my %versions;    # "inst/id/ctr" -> { data, deleted, hard, vv }
	my %instance;    # db -> instance id
	my $next_key = 0;
	@log = ();

	for my $db (@dbs)
	{
		$node->safe_psql('postgres', "DROP DATABASE IF EXISTS $db WITH (FORCE)");
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		q1($db, $schema);
		q1($db, "ALTER DATABASE $db SET morango.batch_size = 3");
		$instance{$db} = q1($db, 'SELECT morango.instance_id()');
	}

	# every version each database wrote, as its store shows it now
	my $capture = sub {
		for my $db (@_)
		{
			my $rows = q1($db, qq{
                SELECT s.id || '/' || s.last_saved_counter, s.serialized::text, s.deleted, s.hard_deleted, $vv_sql
                FROM morango.store s WHERE s.last_saved_instance = morango.instance_id()});
			for my $line (split /\n/, $rows)
			{
				my ($k, $data, $del, $hard, $vv) = split /\|/, $line;
				my $key = "$instance{$db}/$k";
				my $v = { data => $data, deleted => $del, hard => $hard, vv => decode_json($vv) };
				if (my $old = $versions{$key})
				{
					die "version $key ($db) changed content: $old->{data}/$old->{deleted} -> $data/$del"
					  if $old->{data} ne $data || $old->{deleted} ne $del || $old->{hard} ne $hard;
				}
				else
				{
					$versions{$key} = $v;
				}
			}
		}
	};

	my $sync = sub {
		my ($x, $y, $filter, $direction, $chunk, $fault) = @_;
		my $f = defined $filter ? "ARRAY['$filter']" : 'NULL';
		my $peer = 'host=' . $node->host . ' port=' . $node->port . " dbname=$y";
		my ($fdb, $fspec) = @{ $fault // [] };
		q1($fdb, "ALTER DATABASE $fdb SET morango.fault_injection = '$fspec'") if $fdb;
		my ($ret, $out, $err) = $node->psql($x,
			"SELECT morango.sync('$peer', 'p', filter => $f, direction => '$direction', chunk_size => $chunk)");
		if ($fdb)
		{
			wait_up();
			q1($fdb, "ALTER DATABASE $fdb RESET morango.fault_injection");
		}
		push @log, sprintf("sync %s->%s %s %s chunk %d%s: %s", $x, $y, $filter // 'all', $direction,
			$chunk, $fdb ? " fault $fspec on $fdb" : '', $ret == 0 ? "ok $out" : 'failed');
		die "sync $x->$y failed without a fault: $err" if $ret != 0 && !$fdb;
		$capture->($x, $y);
		return $ret == 0;
	};


	# --- the hostile peer ---------------------------------------------------
	# what an attack must not change on its target
	my $fingerprint = sub {
		my ($db) = @_;
		return q1($db, qq{
            SELECT md5(string_agg(t, ' ' ORDER BY t)) FROM (
                SELECT s::text FROM morango.store s
                UNION ALL SELECT r::text FROM morango.record_max_counters r
                UNION ALL SELECT d::text FROM morango.database_max_counters d
                UNION ALL SELECT i::text FROM item i) AS x(t)});
	};
	# one statement as the hostile role: (sqlstate or 'ok', message)
	my $as_hostile = sub {
		my ($db, $sql) = @_;
		my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY sqlstate\n$sql",
			extra_params => [ '-U', 'hostile', '-v', 'ON_ERROR_STOP=1' ]);
		return ('ok', $out) if $ret == 0;
		my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5})/;
		return ($state // 'unknown', $err);
	};
	my $hcount = 0;
	my $uuid = sub { return sprintf('%08x-0000-4000-8000-%012x', $seed, ++$hcount); };
	my $lit = sub { my ($v) = @_; $v =~ s/'/''/g; return "'$v'"; };
	my $packed = sub {
		my ($json) = @_;
		return encode_base64(pack('N', length $json) . compress($json, 1), '');
	};
	# a record of item as a device sends it
	my $record = sub {
		my ($db, $seq, $part, $key, $data, $inst, $ctr, $rmcs) = @_;
		my $id = q1($db, "SELECT morango.record_id(" . $lit->($part) . ", " . $lit->($key) . ", 'item')");
		return {
			id => $id, seq => $seq, profile => 'p', model_name => 'item', partition => $part,
			source_id => $key, serialized => $data, deleted => JSON::PP::false,
			hard_deleted => JSON::PP::false, last_saved_instance => $inst, last_saved_counter => $ctr,
			conflicting_serialized_data => [], rmcs => $rmcs // { $inst => $ctr } };
	};
	# the sync sessions the hostile role opened: closed after each attack,
	# so that its quota is free again
	my @opened;
	my $begin = sub {
		my ($db, $ts, $push, $filter, $fsic) = @_;
		my $ss = $uuid->();
		push @opened, $ss;
		return sprintf("SELECT morango.peer_begin(3, %s, %s, 'p', %s, %s, %s, %s, '{}')",
			$lit->($ss), $lit->($ts), $push ? 'true' : 'false', $lit->("{$filter}"),
			$lit->('c0000000-0000-0000-0000-0000000000ee'),
			$lit->(encode_json($fsic // { super => {}, sub => {} })));
	};
	# open a push of part on db as the hostile role, then push one chunk
	my $push_chunk = sub {
		my ($db, $part, $text) = @_;
		my $ts = $uuid->();
		my ($st, $m) = $as_hostile->($db, $begin->($db, $ts, 1, $part,
			{ super => {}, sub => { $part => { 'c0000000-0000-0000-0000-0000000000ee' => 5 } } }));
		return ($st, $m) unless $st eq 'ok';
		return $as_hostile->($db, sprintf('SELECT morango.peer_push_chunk(%s, %s)', $lit->($ts), $lit->($text)));
	};
	my %attacks = (
		# a record filed under part whose data says another partition
		forged_partition => sub {
			my ($db, $part) = @_;
			my ($other) = grep { $_ ne $part } @parts;
			my $key = 'h' . $hcount;
			return ('22000', $push_chunk->($db, $part, $packed->(encode_json([ $record->($db, 1, $part, $key,
				{ id => $key, part => $other, val => 'forged' }, 'c0000000-0000-0000-0000-0000000000ee', 5) ]))));
		},
		# a version of the target's own instance far above its counter
		poisoned_counter => sub {
			my ($db, $part) = @_;
			my $key = 'h' . $hcount;
			return ('22000', $push_chunk->($db, $part, $packed->(encode_json([ $record->($db, 1, $part, $key,
				{ id => $key, part => $part, val => 'poison' }, 'c0000000-0000-0000-0000-0000000000ee', 5,
				{ 'c0000000-0000-0000-0000-0000000000ee' => 5, $instance{$db} => 9223372036854775807 }) ]))));
		},
		# a chunk declaring more bytes than the receiver takes (never inflated)
		oversized_chunk => sub {
			my ($db, $part) = @_;
			my $text = encode_base64(pack('N', 300_000_000) . compress('[]', 1), '');
			return ('54000', $push_chunk->($db, $part, $text));
		},
		# another role's session: a transfer the honest syncs opened here
		hijack => sub {
			my ($db, $part) = @_;
			my @ts = split /\n/, q1($db, q{
                SELECT t.id || ' ' || t.sync_session_id FROM morango.transfer_sessions t
                JOIN morango.sync_sessions s ON s.id = t.sync_session_id
                WHERE s.is_server AND s.peer_role <> 'hostile' ORDER BY t.started_at, t.id});
			return ('skip') unless @ts;
			my ($ts, $ss) = split / /, $ts[ int(rand(@ts)) ];
			my @calls = (
				sprintf('SELECT morango.peer_pull_chunk(%s, 0, 10)', $lit->($ts)),
				sprintf('SELECT morango.peer_push_chunk(%s, %s)', $lit->($ts), $lit->($packed->('[]'))),
				sprintf('SELECT morango.peer_finish(%s, 0)', $lit->($ts)),
				sprintf('SELECT morango.peer_close(%s, NULL)', $lit->($ss)));
			return ('28000', $as_hostile->($db, $calls[ int(rand(@calls)) ]));
		},
		# a call inside a transaction block, to hold its locks while idle
		transaction_block => sub {
			my ($db, $part) = @_;
			return ('25001', $as_hostile->($db, "BEGIN;\n" . $begin->($db, $uuid->(), 0, $part) . ";\nCOMMIT;"));
		},
		# more open transfers than its quota
		quota => sub {
			my ($db, $part) = @_;
			my ($st, $m);
			for (1 .. 12)
			{
				($st, $m) = $as_hostile->($db, $begin->($db, $uuid->(), 1, $part));
				last unless $st eq 'ok';
			}
			return ('53300', $st, $m);
		},
		# a filter of more prefixes than a filter may have
		huge_filter => sub {
			my ($db, $part) = @_;
			return ('54000', $as_hostile->($db, $begin->($db, $uuid->(), 0,
				join(',', map { "$part:x$_" } 1 .. 2000))));
		},
	);
	my @attack_names = sort keys %attacks;
	my $attack = sub {
		my ($db) = @_;
		my @mine = grep { within($_, $holds{$db}) } @parts;
		my $part = $mine[ int(rand(@mine)) ];
		my $name = $attack_names[ int(rand(@attack_names)) ];
		my $before = $fingerprint->($db);
		my ($want, $got, $msg) = $attacks{$name}->($db, $part);
		return if $want eq 'skip';
		push @log, "hostile $name on $db ($part): $got";
		die "hostile $name on $db was not refused with $want: $got $msg" if $got ne $want;
		die "hostile $name on $db changed its state" if $fingerprint->($db) ne $before;
		for my $ss (@opened)
		{
			my ($st, $m) = $as_hostile->($db, sprintf('SELECT morango.peer_close(%s, NULL)', $lit->($ss)));
			die "the hostile role could not close its own session: $m" if $st ne 'ok';
		}
		@opened = ();
	};

	for my $step (1 .. $steps)
	{
		my $db = $dbs[ int(rand(@dbs)) ];
		if (rand() < 0.12)
		{
			$attack->($db);
			next;
		}
		my $r = rand();
		my @mine = grep { within($_, $holds{$db}) } @parts;
		if ($r < 0.40)
		{
			# a sync with a random peer
			my @others = grep { $_ ne $db } @dbs;
			my $peer = $others[ int(rand(@others)) ];
			my @fs = filters_for($db, $peer);
			my $filter = $fs[ int(rand(@fs)) ];
			my $direction = (qw(push pull both))[ int(rand(3)) ];
			my $chunk = (1, 2, 5, 100)[ int(rand(4)) ];
			my $fault;
			if (rand() < 0.3)
			{
				my $point = (qw(serialize queue send_chunk:2 receive_chunk:2 dequeue deserialize:2))[ int(rand(6)) ];
				my $action = (qw(error error error kill kill_after_commit))[ int(rand(5)) ];
				$fault = [ rand() < 0.5 ? $db : $peer, "$point:$action" ];
			}
			my $ok = $sync->($db, $peer, $filter, $direction, $chunk, $fault);
			# a failed sync is retried at once (as the worker would), or left for later
			$sync->($db, $peer, $filter, $direction, $chunk) if !$ok && rand() < 0.7;
			next;
		}

		my @live = split /\n/, q1($db, 'SELECT id FROM item ORDER BY id');
		my $val = 'v' . int(rand(1_000_000));
		if ($r < 0.60 || !@live)
		{
			my $key = 'k' . $next_key++;
			my $part = $mine[ int(rand(@mine)) ];
			q1($db, "INSERT INTO item VALUES ('$key', '$part', '$val')");
			push @log, "$db: insert $key $part";
		}
		elsif ($r < 0.80)
		{
			my $key = $live[ int(rand(@live)) ];
			q1($db, "UPDATE item SET val = '$val' WHERE id = '$key'");
			push @log, "$db: update $key";
		}
		elsif ($r < 0.88)
		{
			my $key = $live[ int(rand(@live)) ];
			q1($db, "DELETE FROM item WHERE id = '$key'");
			push @log, "$db: delete $key";
		}
		elsif ($r < 0.93)
		{
			my $key = $live[ int(rand(@live)) ];
			q1($db, "BEGIN; SET LOCAL morango.hard_delete = on; DELETE FROM item WHERE id = '$key'; COMMIT;");
			push @log, "$db: hard delete $key";
		}
		else
		{
			my @gone = split /\n/, q1($db, q{
                SELECT source_id || ' ' || partition FROM morango.store
                WHERE deleted AND NOT hard_deleted AND source_id NOT IN (SELECT id FROM item)
                ORDER BY source_id});
			next unless @gone;
			my ($key, $part) = split / /, $gone[ int(rand(@gone)) ];
			q1($db, "INSERT INTO item VALUES ('$key', '$part', '$val')");
			push @log, "$db: re-create $key";
		}
	}

	# the final round
	my @final = (
		[ 'd4', 'd3', 'f1:a' ], [ 'd3', 'd0', 'f1' ],
		[ 'd0', 'd1', undef ], [ 'd1', 'd2', undef ], [ 'd2', 'd0', undef ],
		[ 'd0', 'd1', undef ], [ 'd1', 'd2', undef ], [ 'd2', 'd0', undef ],
		[ 'd3', 'd0', 'f1' ], [ 'd4', 'd3', 'f1:a' ]);
	$sync->(@$_, 'both', 100) for @final;

	my @failures;
	my $check = sub { my ($ok, $what) = @_; push @failures, $what unless $ok; };

	# C1: the same store rows wherever a partition is held
	my %store;
	for my $db (@dbs)
	{
		my $rows = q1($db, qq{
            SELECT s.id, s.partition, s.source_id, s.serialized::text, s.deleted, s.hard_deleted,
                   s.last_saved_instance, s.last_saved_counter, $vv_sql
            FROM morango.store s ORDER BY s.id});
		for my $line (split /\n/, $rows)
		{
			my ($id, $part, $src, $data, $del, $hard, $lsi, $lsc, $vv) = split /\|/, $line;
			$check->(within($part, $holds{$db}), "C1: $db holds $src in $part");
			$store{$db}{$id} = { part => $part, src => $src, data => $data, deleted => $del, hard => $hard,
				lsi => $lsi, lsc => $lsc, vv => $vv, line => $line };
		}
	}
	for my $db (@dbs[ 1 .. 4 ])
	{
		for my $id (sort keys %{ $store{d0} })
		{
			my $want = $store{d0}{$id};
			next unless within($want->{part}, $holds{$db});
			my $got = $store{$db}{$id};
			$check->($got && $got->{line} eq $want->{line},
				"C1: $db has record $want->{src} as d0 has it: " . ($got ? $got->{line} : 'missing') . " vs $want->{line}");
		}
		$check->(!exists $store{$db}{$_} || exists $store{d0}{$_}, "C1: $db has $_ that d0 lacks")
		  for keys %{ $store{$db} };
	}

	# C2: the application tables follow the store
	for my $db (@dbs)
	{
		my %app = map { my ($k, $p, $v) = split /\|/; ($k => "$p|$v") } split /\n/,
		  q1($db, 'SELECT id, part, val FROM item');
		my %want;
		for my $rec (values %{ $store{$db} })
		{
			next if $rec->{deleted} eq 't';
			my $d = decode_json($rec->{data});
			$want{ $rec->{src} } = "$d->{part}|$d->{val}";
		}
		for my $k (sort(keys %app), sort(keys %want))
		{
			$check->(($app{$k} // 'none') eq ($want{$k} // 'none'),
				"C2: $db row $k is " . ($app{$k} // 'none') . ', the store says ' . ($want{$k} // 'none'));
		}
	}

	# C3, C4, C5 on the converged store of d0 (it holds everything)
	my %by_record;
	for my $key (keys %versions)
	{
		my ($inst, $id, $ctr) = split m{/}, $key;
		push @{ $by_record{$id} }, { inst => $inst, ctr => $ctr, %{ $versions{$key} } };
	}
	for my $id (sort keys %{ $store{d0} })
	{
		my $fin = $store{d0}{$id};
		my $v = $versions{"$fin->{lsi}/$id/$fin->{lsc}"};
		$check->($v, "C3: $fin->{src}: the final version $fin->{lsi}/$fin->{lsc} was never written");
		if ($v)
		{
			$check->($v->{deleted} eq $fin->{deleted} && $v->{hard} eq $fin->{hard}
				  && ($fin->{hard} eq 't' || $v->{data} eq $fin->{data}),
				"C3: $fin->{src}: final content differs from the version written");
		}
		my $vv = decode_json($fin->{vv});
		for my $w (@{ $by_record{$id} // [] })
		{
			$check->(($vv->{ $w->{inst} } // 0) >= $w->{ctr},
				"C4: $fin->{src}: the final version vector misses $w->{inst}/$w->{ctr}");
			next if $w->{inst} eq $fin->{lsi} && $w->{ctr} == $fin->{lsc};
			$check->(($w->{vv}{ $fin->{lsi} } // 0) < $fin->{lsc},
				"C5: $fin->{src}: the final version $fin->{lsi}/$fin->{lsc} is an ancestor of $w->{inst}/$w->{ctr}");
		}
	}
	$check->(exists $store{d0}{$_}, "C4: record $_ was written but is gone") for keys %by_record;

	# C6
	for my $db (@dbs)
	{
		my $broken = q1($db, q{SELECT string_agg(invariant || ' ' || detail, '; ') FROM morango.check_invariants()});
		$check->($broken eq '', "C6: $db: $broken");
		my $left = q1($db, q{
            SELECT count(*) FROM morango.buffer b
            WHERE NOT EXISTS (SELECT FROM morango.transfer_sessions t
                              WHERE t.id = b.transfer_session_id AND t.active)});
		$check->($left eq '0', "C6: $db: $left buffer rows outside unfinished sessions");
	}

	my $records = scalar keys %{ $store{d0} };
	my $nversions = scalar keys %versions;
	my $nsyncs = grep { /^sync/ } @log;
	my $nfailed = grep { /^sync.*failed$/ } @log;
	my %tally;
	$tally{$_}++ for map { /^hostile (\S+)/ ? $1 : () } @log;
	my $nattacks = join(' ', map { "$_ $tally{$_}" } sort keys %tally) || 'none';
	my $nconflicts = q1('d0', q{SELECT count(*) FROM morango.store WHERE conflicting_serialized_data <> '[]'});
	if (@failures)
	{
		diag("seed $seed failed; replay with MORANGO_SEEDS=$seed (MORANGO_STEPS=$steps)");
		diag($_) for @failures[ 0 .. ($#failures < 19 ? $#failures : 19) ];
		diag("schedule:\n" . join("\n", @log));
		for my $db (@dbs)
		{
			diag("$db (instance $instance{$db}) transfer sessions:\n" . q1($db, q{
                SELECT t.sync_session_id, t.id, t.push, t.filter, t.stage, t.status, t.active,
                       t.records_total, t.records_transferred, t.last_error, t.local_fsic, t.remote_fsic
                FROM morango.transfer_sessions t ORDER BY t.started_at}));
			diag("$db database max counters:\n" . q1($db, q{
                SELECT partition, instance_id, counter FROM morango.database_max_counters ORDER BY 1, 2}));
		}
	}
	if (@failures && $ENV{MORANGO_KEEP_DIR})
	{
		# keep the databases of the failing seed for a closer look
		$node->stop;
		system('cp', '-a', $node->data_dir, $ENV{MORANGO_KEEP_DIR}) == 0 or die 'cannot keep the cluster';
		$node->start;
	}
	ok(!@failures, "seed $seed: $records records, $nversions versions, $nsyncs syncs ($nfailed failed), attacks refused: $nattacks; $nconflicts records with conflicts: converged");
}

for my $seed (@seeds)
{
	next if eval { run_seed($seed); 1 };
	fail("seed $seed: $@");
	diag("seed $seed failed; replay with MORANGO_SEEDS=$seed (MORANGO_STEPS=$steps)");
	diag("schedule:\n" . join("\n", @log));
}

$node->stop;
done_testing();

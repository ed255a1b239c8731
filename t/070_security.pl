# Sends between backends of different roles follow the rule of
# pg_signal_backend (README, "Security"): a superuser may send to anyone;
# others to the manager, to themselves, and to processes of a role whose
# privileges they have (the role itself, or a role they inherit from), or
# to any non-superuser process if they have the privileges of
# pg_signal_backend; never to a superuser's process or to one without a
# role.  Refusals are 42501 with the rule in DETAIL; the receiver sees who
# sent each message.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('security');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION imessages;
CREATE ROLE regress_imsg_users;
GRANT EXECUTE ON FUNCTION imsg_send(bytea, integer, integer),
                          imsg_send(text, integer, integer),
                          imsg_receive(integer, integer),
                          imsg_receive_internal(integer, integer),
                          imsg_manager_pid()
  TO regress_imsg_users;
CREATE ROLE regress_alice LOGIN IN ROLE regress_imsg_users;
CREATE ROLE regress_bob LOGIN IN ROLE regress_imsg_users;
CREATE ROLE regress_carol LOGIN IN ROLE regress_imsg_users, regress_alice;
CREATE ROLE regress_dave LOGIN IN ROLE regress_imsg_users, pg_signal_backend;
CREATE ROLE regress_eve LOGIN NOINHERIT;
GRANT regress_imsg_users, regress_alice TO regress_eve;
-- try(sql): 'ok' or the SQLSTATE of its error
CREATE FUNCTION regress_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
});
$node->poll_query_until('postgres',
	"SELECT imsg_manager_pid() IS NOT NULL AND EXISTS (SELECT 1 FROM imsg_helpers() WHERE state = 'idle')")
  or die 'manager or helper did not start';
my $manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
my $helper = $node->safe_psql('postgres',
	"SELECT pid FROM imsg_helpers() WHERE state = 'idle' LIMIT 1");

# One session per role, each with its mailbox open.
my (%session, %pid);
for my $who (qw(alice bob carol dave eve super))
{
	my $user = $who eq 'super' ? [] : [ '-U', "regress_$who" ];
	$session{$who} = $node->background_psql('postgres', extra_params => $user);
	# eve does not inherit: she needs SET ROLE for the functions
	$session{$who}->query_safe('SET ROLE regress_imsg_users') if $who eq 'eve';
	$pid{$who} = $session{$who}->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
}
$pid{manager} = $manager;
$pid{helper} = $helper;

# sender => { target => expected }
my %rules = (
	alice => { alice => 'ok', bob => '42501', super => '42501', manager => 'ok', helper => '42501' },
	bob => { alice => '42501', bob => 'ok', carol => '42501', super => '42501' },
	carol => { alice => 'ok', bob => '42501', super => '42501' },
	dave => { alice => 'ok', bob => 'ok', carol => 'ok', super => '42501', helper => '42501' },
	eve => { alice => '42501', eve => 'ok', super => '42501' },
	super => { alice => 'ok', bob => 'ok', manager => 'ok', helper => 'ok' },);
for my $from (sort keys %rules)
{
	for my $to (sort keys %{ $rules{$from} })
	{
		is( $session{$from}->query_safe(
				"SELECT regress_try(\$\$SELECT imsg_send('$from to $to', $pid{$to})\$\$)"),
			$rules{$from}{$to},
			"$from sends to $to: $rules{$from}{$to}");
	}
}
# a NOINHERIT member has the target's privileges once it sets the role
$session{eve}->query_safe('SET ROLE regress_alice');
is( $session{eve}->query_safe(
		"SELECT regress_try(\$\$SELECT imsg_send('eve as alice to alice', $pid{alice})\$\$)"),
	'ok', 'eve, after SET ROLE regress_alice, sends to alice');
# SET ROLE on the target's side does not change whose process it is
$session{alice}->query_safe('SET ROLE regress_imsg_users');
is( $session{bob}->query_safe(
		"SELECT regress_try(\$\$SELECT imsg_send('bob to alice', $pid{alice})\$\$)"),
	'42501', "the target's role is its login role, not its current role");
$session{alice}->query_safe('RESET ROLE');

# Each receiver got exactly the messages the rules let through, in the
# order they were sent, and sees who sent them: the sender's process and
# role.
my $names = join(', ', map { "($pid{$_}, '$_')" } qw(alice bob carol dave eve super));

sub mailbox
{
	my $who = shift;
	return $session{$who}->query_safe(
		"SELECT string_agg(coalesce(n.name, '?') || ' as '
		                   || CASE WHEN rolsuper THEN 'superuser' ELSE sender_role::text END
		                   || ': ' || convert_from(payload, 'UTF8'), ', ' ORDER BY ord)
		   FROM (SELECT *, row_number() OVER () AS ord FROM imsg_receive()) r
		   LEFT JOIN (VALUES $names) n(pid, name) ON n.pid = r.sender_pid
		   LEFT JOIN pg_roles ON pg_roles.oid = r.sender_role");
}
is(mailbox('alice'),
	'alice as regress_alice: alice to alice, carol as regress_carol: carol to alice, '
	  . 'dave as regress_dave: dave to alice, super as superuser: super to alice, '
	  . 'eve as regress_alice: eve as alice to alice',
	"alice's mailbox: the allowed messages, with each sender's process and role");
is(mailbox('bob'),
	'bob as regress_bob: bob to bob, dave as regress_dave: dave to bob, super as superuser: super to bob',
	"bob's mailbox");
is(mailbox('carol'), 'dave as regress_dave: dave to carol', "carol's mailbox");
is(mailbox('eve'), 'eve as regress_imsg_users: eve to eve',
	"eve's mailbox: her own message, sent as the role she had set");
is(mailbox('super'), '', "nobody but the superuser reached the superuser's mailbox");

# The refusal says which rule applies.
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_send('x', $pid{alice})",
	extra_params => [ '-U', 'regress_bob', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: permission denied to send to process $pid{alice}/,
	'refused: 42501');
like($err,
	qr/DETAIL:  Only roles with the privileges of the process's role "regress_alice" or of "pg_signal_backend" may send to it\./,
	'the rule is in DETAIL');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_send('x', $pid{super})",
	extra_params => [ '-U', 'regress_dave', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: permission denied to send to process $pid{super}/,
	'pg_signal_backend does not reach a superuser');
like($err,
	qr/DETAIL:  Only superusers may send to a process of a superuser or of no role \(a background worker\)\./,
	'with the superuser rule in DETAIL');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_send('x', $pid{alice})",
	extra_params => [ '-U', 'regress_eve', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: permission denied for function imsg_send/,
	'a NOINHERIT member without SET ROLE has no EXECUTE either');

# A refused send leaves nothing behind.
is( $node->safe_psql('postgres',
		"SELECT queued_messages FROM imsg_mailboxes WHERE pid = $pid{super}"),
	'0', 'nothing queued for the superuser');

$_->quit for values %session;
$node->stop;
done_testing();

"""The outbox's functions and its sequencer (DESIGN §7a, P4): hq_note appends an
event, hq_alerts raises edge-triggered threshold and soft-limit alerts, and
hq_sequence_event, a deferred constraint trigger, gives each event its public id
at the commit, under the event sequencer, so ids are given in commit order."""

from django.db import migrations

from quotas.events.services import InstallEventFunctions


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]

    operations = [
        InstallEventFunctions(digest="b17e3f545680d1cb"),
        migrations.RunSQL(
            sql=[
                "CREATE SEQUENCE events_public_id_seq AS bigint OWNED BY events.id",
                """
                CREATE CONSTRAINT TRIGGER events_sequence AFTER INSERT ON events
                DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION hq_sequence_event()
                """,
            ],
            reverse_sql=[
                "DROP TRIGGER events_sequence ON events",
                "DROP SEQUENCE events_public_id_seq",
            ],
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from models import JobState
from tortoise import fields
from tortoise.indexes import Index

# Jobs written before this migration name their conversation only in the serial key.
_PREFIXES = ("conversation:", "replies:", "snooze:", "waiting:")


async def _conversation_column(apps, schema_editor):
    """Fill ``conversation_id`` of unfinished and failed jobs from their serial keys.

    Failed ones too: an operator may retry them, and their payloads name only a message or an
    audit entry, so the payload needs the column.
    """
    client = schema_editor.client
    rows = await client.execute_query_dict(
        "SELECT id, serial_key FROM jobs WHERE state IN ('pending', 'running', 'failed')"
    )
    param = "$1" if client.capabilities.dialect == "postgres" else "?"
    param2 = "$2" if client.capabilities.dialect == "postgres" else "?"
    for row in rows:
        key = str(row["serial_key"])
        for prefix in _PREFIXES:
            number = key.removeprefix(prefix)
            if key.startswith(prefix) and number.isdigit():
                await client.execute_query(
                    f"UPDATE jobs SET conversation_id = {param} WHERE id = {param2}",
                    [int(number), row["id"]],
                )


# Only the oldest unfinished job of a serial key stays pending; the others queue behind it.
_QUEUE_FOLLOWERS = """
UPDATE jobs SET state = 'queued'
WHERE state = 'pending' AND EXISTS (
    SELECT 1 FROM jobs AS older
    WHERE older.serial_key = jobs.serial_key AND older.id < jobs.id
      AND older.state IN ('pending', 'running')
)
"""

class Migration(migrations.Migration):
    dependencies = [('models', '0003_inbound_before_threading')]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name='Job',
            options={'table': 'jobs', 'app': 'models', 'indexes': [Index(fields=['state', 'run_at']), Index(fields=['serial_key', 'state']), Index(fields=['state', 'updated_at'])], 'pk_attr': 'id', 'table_description': 'A step of work after intake, retried with backoff until done (kinds: bot/jobkinds.py).'},
        ),
        ops.AlterField(
            model_name='Job',
            name='state',
            field=fields.CharEnumField(default=JobState.PENDING, description='PENDING: pending\nQUEUED: queued\nRUNNING: running\nPARKED: parked\nDONE: done\nFAILED: failed\nCANCELLED: cancelled', enum_type=JobState, max_length=16),
        ),
        ops.AddField(
            model_name='Job',
            name='conversation_id',
            field=fields.IntField(null=True, db_index=True),
        ),
        ops.AddIndex(
            model_name='Job',
            index=Index(fields=['state', 'updated_at']),
        ),
        ops.RunPython(_conversation_column),
        ops.RunSQL(_QUEUE_FOLLOWERS),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops

# Indexes the models declare that SQLite databases lost: on SQLite an altered column rebuilds
# its table (0003 messages, 0004 jobs), and the rebuild did not carry these over. Without them
# every enqueue read all pending jobs to find a serial key's unfinished work, and e-mail
# threading read all messages to find a Message-ID. PostgreSQL kept them (same names, which are
# the ones tortoise gives these indexes), so this changes nothing there.
INDEXES = (
    ("idx_jobs_serial__5dd672", "jobs", ("serial_key",)),
    ("idx_jobs_serial__5a50ff", "jobs", ("serial_key", "state")),
    ("idx_jobs_state_2f9db8", "jobs", ("state", "run_at")),
    ("idx_messages_externa_1ebb34", "messages", ("external_id",)),
)


async def _create(apps, schema_editor):
    client = schema_editor.client
    if client.capabilities.dialect != "sqlite":
        return
    for name, table, columns in INDEXES:
        await client.execute_script(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({", ".join(columns)})'
        )


async def _drop(apps, schema_editor):
    # Going back leaves them: the models declare them at every version since 0001.
    return


class Migration(migrations.Migration):
    dependencies = [("models", "0012_job_round_trips")]

    initial = False

    operations = [
        ops.RunPython(_create, _drop),
    ]

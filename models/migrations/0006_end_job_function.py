from tortoise import migrations
from tortoise.migrations import operations as ops

# Ending a job is the last step of every job: on PostgreSQL it is one call of this function
# (one round trip) instead of a transaction of four. It holds the serial key's advisory lock,
# as whoever queues a job behind the key does, and only then reads and promotes the key's next
# job: a volatile function's every statement takes a new snapshot, so it sees the job a
# concurrent enqueuer committed while it waited for the lock. Used by bot/jobs.py.
CREATE = """
CREATE OR REPLACE FUNCTION switchboard_end_job(
    job_id bigint, claim text, new_state text, error text, ended_at timestamptz, key text
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(key, 0));
    UPDATE jobs SET state = new_state, locked_until = NULL, last_error = error,
                    updated_at = ended_at
     WHERE id = job_id AND locked_by = claim AND state = 'running';
    IF NOT FOUND THEN
        RETURN false;  -- the lease was lost: another worker holds the job
    END IF;
    UPDATE jobs SET state = 'pending'
     WHERE id = (SELECT MIN(id) FROM jobs WHERE serial_key = key AND state = 'queued')
       AND NOT EXISTS (SELECT 1 FROM jobs WHERE serial_key = key
                        AND state IN ('pending', 'running', 'parked'));
    RETURN true;
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS switchboard_end_job(bigint, text, text, text, timestamptz, text)"


async def _create(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(CREATE)


async def _drop(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(DROP)


class Migration(migrations.Migration):
    dependencies = [('models', '0005_history_indexes')]

    initial = False

    operations = [
        ops.RunPython(_create, _drop),
    ]

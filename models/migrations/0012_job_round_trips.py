from tortoise import migrations
from tortoise.migrations import operations as ops

# Two more job steps in one round trip each on PostgreSQL (used by bot/jobs.py):
#
# - switchboard_finish_job: ends a job as switchboard_end_job (0006) does, and says whether it
#   let a queued job of its key go ('promoted'), so the runner looks for work after a job only
#   when there is some. 0006's function stays for replicas that still call it.
# - switchboard_busy_keys: takes the keys' advisory locks (in the order given: callers sort),
#   then returns the keys that have unfinished jobs. A volatile function's every statement takes
#   a new snapshot, so the read sees a head that ended while this waited for the lock (the reason
#   the two were separate statements before).
CREATE = """
CREATE OR REPLACE FUNCTION switchboard_finish_job(
    job_id bigint, claim text, new_state text, error text, ended_at timestamptz, key text
) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(key, 0));
    UPDATE jobs SET state = new_state, locked_until = NULL, last_error = error,
                    updated_at = ended_at
     WHERE id = job_id AND locked_by = claim AND state = 'running';
    IF NOT FOUND THEN
        RETURN 'lost';  -- another worker holds the job
    END IF;
    UPDATE jobs SET state = 'pending'
     WHERE id = (SELECT MIN(id) FROM jobs WHERE serial_key = key AND state = 'queued')
       AND NOT EXISTS (SELECT 1 FROM jobs WHERE serial_key = key
                        AND state IN ('pending', 'running', 'parked'));
    IF FOUND THEN
        RETURN 'promoted';
    END IF;
    RETURN 'ended';
END
$$;

CREATE OR REPLACE FUNCTION switchboard_busy_keys(keys text[])
RETURNS SETOF text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(keys) AS k;
    RETURN QUERY SELECT DISTINCT serial_key::text FROM jobs
                  WHERE serial_key = ANY(keys)
                    AND state IN ('pending', 'queued', 'running', 'parked');
END
$$;
"""
DROP = """
DROP FUNCTION IF EXISTS switchboard_finish_job(bigint, text, text, text, timestamptz, text);
DROP FUNCTION IF EXISTS switchboard_busy_keys(text[]);
"""


async def _create(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(CREATE)


async def _drop(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script(DROP)


class Migration(migrations.Migration):
    dependencies = [("models", "0011_spikes")]

    initial = False

    operations = [
        ops.RunPython(_create, _drop),
    ]

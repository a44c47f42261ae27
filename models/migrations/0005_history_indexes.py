from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

# Every column a hot path filters, joins or cascades on (tortoise indexes no foreign key on
# PostgreSQL). Built while the service keeps running: CONCURRENTLY on PostgreSQL, where a
# replica goes on serving while another migrates, so this migration is not atomic.
INDEXES = (
    ("idx_messages_conversation", "messages", ("conversation_id", "id")),
    ("idx_messages_chat_ts", "messages", ("chat_ts",)),
    ("idx_attachments_message", "attachments", ("message_id",)),
    ("idx_conversations_customer", "conversations", ("customer_id", "id")),
    ("idx_conversations_identity", "conversations", ("identity_id", "id")),
    ("idx_conversations_status_skill", "conversations", ("status", "skill")),
    ("idx_conversations_status_updated", "conversations", ("status", "updated_at")),
    ("idx_identities_customer", "identities", ("customer_id",)),
    ("idx_identities_address", "identities", ("address",)),
    ("idx_audit_entries_conversation", "audit_entries", ("conversation_id", "id")),
    ("idx_former_threads_conversation", "former_threads", ("conversation_id",)),
    # Job.conversation_id's db_index (0004 added the column without it); the name is the one
    # tortoise gives that index, so the model and the schema agree.
    ("idx_jobs_convers_d2ba1b", "jobs", ("conversation_id",)),
    ("idx_jobs_claim", "jobs", ("state", "run_at", "id")),
)


async def _create_indexes(apps, schema_editor):
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for name, table, columns in INDEXES:
        if postgres:
            # An interrupted concurrent build leaves an invalid index behind: build it again.
            invalid = await client.execute_query_dict(
                "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid",
                [name],
            )
            if invalid:
                await client.execute_script(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        # One statement per call: CONCURRENTLY cannot run inside a transaction block.
        await client.execute_script(
            f'CREATE INDEX {"CONCURRENTLY " if postgres else ""}IF NOT EXISTS "{name}" '
            f'ON "{table}" ({", ".join(columns)})'
        )


async def _drop_indexes(apps, schema_editor):
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for name, _, _ in INDEXES:
        await client.execute_script(
            f'DROP INDEX {"CONCURRENTLY " if postgres else ""}IF EXISTS "{name}"'
        )


def _indexes_of(table):
    return [Index(fields=list(columns), name=name) for name, t, columns in INDEXES if t == table]


class Migration(migrations.Migration):
    dependencies = [('models', '0004_job_catalogue')]

    initial = False
    atomic = False

    operations = [
        # The models' Meta.indexes, for the migration state; the SQL is _create_indexes.
        ops.AlterModelOptions(
            name='Message',
            options={'table': 'messages', 'app': 'models', 'indexes': _indexes_of('messages'), 'pk_attr': 'id', 'table_description': 'One message in a conversation, either way.'},
        ),
        ops.AlterModelOptions(
            name='StoredAttachment',
            options={'table': 'attachments', 'app': 'models', 'indexes': _indexes_of('attachments'), 'pk_attr': 'id'},
        ),
        ops.AlterModelOptions(
            name='Conversation',
            options={'table': 'conversations', 'app': 'models', 'indexes': [Index(fields=['chat_channel', 'chat_thread_ts']), *_indexes_of('conversations')], 'pk_attr': 'id'},
        ),
        ops.AlterModelOptions(
            name='Identity',
            options={'table': 'identities', 'app': 'models', 'unique_together': (('channel', 'address'),), 'indexes': _indexes_of('identities'), 'pk_attr': 'id', 'table_description': 'One way to reach a customer: an e-mail address, a Telegram user, a webhook sender.'},
        ),
        ops.AlterModelOptions(
            name='AuditEntry',
            options={'table': 'audit_entries', 'app': 'models', 'indexes': _indexes_of('audit_entries'), 'pk_attr': 'id', 'table_description': 'One change a person made (who, what, when), shown in the thread of its conversation.'},
        ),
        ops.AlterModelOptions(
            name='FormerThread',
            options={'table': 'former_threads', 'app': 'models', 'unique_together': (('chat_channel', 'chat_thread_ts'),), 'indexes': _indexes_of('former_threads'), 'pk_attr': 'id', 'table_description': 'A Slack thread a conversation was shown in before a lead moved it elsewhere.'},
        ),
        ops.AlterModelOptions(
            name='Job',
            options={'table': 'jobs', 'app': 'models', 'indexes': [Index(fields=['state', 'run_at']), Index(fields=['serial_key', 'state']), Index(fields=['state', 'updated_at']), Index(fields=['state', 'run_at', 'id'], name='idx_jobs_claim')], 'pk_attr': 'id', 'table_description': 'A step of work after intake, retried with backoff until done (kinds: bot/jobkinds.py).'},
        ),
        ops.RunPython(_create_indexes, _drop_indexes, atomic=False),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

# The facts reports read: nullable columns (added to a filled table without a rewrite) and the
# indexes a report's period filters on, built CONCURRENTLY on PostgreSQL so replicas keep
# serving while one migrates (this migration is therefore not atomic).
INDEXES = (
    ("idx_conversations_created", "conversations", ("created_at",)),
    ("idx_conversations_first_reply", "conversations", ("first_reply_at",)),
    ("idx_conversations_closed", "conversations", ("closed_at",)),
    ("idx_messages_created", "messages", ("created_at",)),
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


class Migration(migrations.Migration):
    dependencies = [('models', '0008_blocks_vectors')]

    initial = False
    atomic = False

    operations = [
        ops.AddField(
            model_name='Conversation',
            name='first_reply_at',
            field=fields.DatetimeField(null=True, description='When the first agent reply reached the customer, and how long after the first message.', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Conversation',
            name='first_reply_seconds',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Conversation',
            name='closed_at',
            field=fields.DatetimeField(null=True, description="When it was last closed, and how long after the customer's first message.", auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Conversation',
            name='resolution_seconds',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Message',
            name='response_seconds',
            field=fields.IntField(null=True, description="An agent's reply: how long (working time) the customer had waited when it was sent;"),
        ),
        # The models' Meta.indexes, for the migration state; the SQL is _create_indexes.
        ops.AlterModelOptions(
            name='Conversation',
            options={'table': 'conversations', 'app': 'models', 'indexes': [Index(fields=['chat_channel', 'chat_thread_ts']), Index(fields=['customer_id', 'id'], name='idx_conversations_customer'), Index(fields=['identity_id', 'id'], name='idx_conversations_identity'), Index(fields=['status', 'skill'], name='idx_conversations_status_skill'), Index(fields=['status', 'updated_at'], name='idx_conversations_status_updated'), Index(fields=['created_at'], name='idx_conversations_created'), Index(fields=['first_reply_at'], name='idx_conversations_first_reply'), Index(fields=['closed_at'], name='idx_conversations_closed')], 'pk_attr': 'id'},
        ),
        ops.AlterModelOptions(
            name='Message',
            options={'table': 'messages', 'app': 'models', 'indexes': [Index(fields=['conversation_id', 'id'], name='idx_messages_conversation'), Index(fields=['chat_ts'], name='idx_messages_chat_ts'), Index(fields=['created_at'], name='idx_messages_created')], 'pk_attr': 'id', 'table_description': 'One message in a conversation, either way.'},
        ),
        ops.RunPython(_create_indexes, _drop_indexes, atomic=False),
    ]

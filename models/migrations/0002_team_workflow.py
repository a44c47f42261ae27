from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AgentName',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user_id', fields.CharField(unique=True, max_length=64)),
                ('display_name', fields.CharField(max_length=255)),
                ('set_by', fields.CharField(default='', max_length=64)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'agent_names', 'app': 'models', 'pk_attr': 'id', 'table_description': 'The name the replies of an agent go out under, set by an admin over the Slack profile.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', null=True, db_constraint=True, to_field='id', related_name='audit_entries', on_delete=OnDelete.CASCADE)),
                ('actor_id', fields.CharField(max_length=64)),
                ('actor_name', fields.CharField(default='', max_length=255)),
                ('action', fields.CharField(max_length=32)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('summary', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_entries', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One change a person made (who, what, when), shown in the thread of its conversation.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='FormerThread',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='former_threads', on_delete=OnDelete.CASCADE)),
                ('chat_channel', fields.CharField(max_length=128)),
                ('chat_thread_ts', fields.CharField(max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'former_threads', 'app': 'models', 'unique_together': (('chat_channel', 'chat_thread_ts'),), 'pk_attr': 'id', 'table_description': 'A Slack thread a conversation was shown in before a lead moved it elsewhere.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Conversation',
            name='snoozed_until',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]

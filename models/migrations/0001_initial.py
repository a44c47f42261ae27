from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from bot.shapes import ChannelKind, DeliveryState, Priority
from json import dumps, loads
from models import ConversationStatus, Direction, JobState
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Customer',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(default='', max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'customers', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Identity',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='identities', on_delete=OnDelete.CASCADE)),
                ('channel', fields.CharEnumField(description='EMAIL: email\nTELEGRAM: telegram\nWEBHOOK: webhook', enum_type=ChannelKind, max_length=16)),
                ('address', fields.CharField(max_length=320)),
                ('display_name', fields.CharField(default='', max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'identities', 'app': 'models', 'unique_together': (('channel', 'address'),), 'pk_attr': 'id', 'table_description': 'One way to reach a customer: an e-mail address, a Telegram user, a webhook sender.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Conversation',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('token', fields.CharField(unique=True, max_length=16)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.CASCADE)),
                ('identity', fields.ForeignKeyField('models.Identity', source_field='identity_id', db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.CASCADE)),
                ('channel', fields.CharEnumField(description='EMAIL: email\nTELEGRAM: telegram\nWEBHOOK: webhook', enum_type=ChannelKind, max_length=16)),
                ('thread_key', fields.CharField(null=True, db_index=True, max_length=255)),
                ('subject', fields.CharField(default='', max_length=998)),
                ('normalised_subject', fields.CharField(default='', db_index=True, max_length=998)),
                ('skill', fields.CharField(default='', max_length=64)),
                ('priority', fields.CharEnumField(default=Priority.NORMAL, description='URGENT: urgent\nHIGH: high\nNORMAL: normal\nLOW: low', enum_type=Priority, max_length=16)),
                ('priority_reason', fields.CharField(default='', max_length=255)),
                ('language', fields.CharField(default='', max_length=16)),
                ('sentiment', fields.CharField(default='', max_length=16)),
                ('confidence', fields.FloatField(default=0.0)),
                ('status', fields.CharEnumField(default='open', description='OPEN: open\nCLOSED: closed', enum_type=ConversationStatus, max_length=16)),
                ('owner', fields.CharField(default='', max_length=64)),
                ('chat_channel', fields.CharField(null=True, max_length=128)),
                ('chat_thread_ts', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('last_inbound_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'conversations', 'app': 'models', 'indexes': [Index(fields=['chat_channel', 'chat_thread_ts'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Job',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('kind', fields.CharField(max_length=32)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('serial_key', fields.CharField(db_index=True, max_length=64)),
                ('state', fields.CharEnumField(default=JobState.PENDING, description='PENDING: pending\nRUNNING: running\nDONE: done\nFAILED: failed\nCANCELLED: cancelled', enum_type=JobState, max_length=16)),
                ('run_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('locked_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('locked_by', fields.CharField(default='', max_length=64)),
                ('last_error', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'jobs', 'app': 'models', 'indexes': [Index(fields=['state', 'run_at']), Index(fields=['serial_key', 'state'])], 'pk_attr': 'id', 'table_description': 'A step of work after intake, retried with backoff until done.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.CASCADE)),
                ('direction', fields.CharEnumField(description='INBOUND: in\nOUTBOUND: out', enum_type=Direction, max_length=8)),
                ('channel', fields.CharEnumField(description='EMAIL: email\nTELEGRAM: telegram\nWEBHOOK: webhook', enum_type=ChannelKind, max_length=16)),
                ('dedup_key', fields.CharField(null=True, unique=True, max_length=512)),
                ('external_id', fields.CharField(null=True, db_index=True, max_length=998)),
                ('sender_name', fields.CharField(default='', max_length=255)),
                ('sender_address', fields.CharField(default='', max_length=320)),
                ('author_id', fields.CharField(default='', max_length=64)),
                ('subject', fields.CharField(default='', max_length=998)),
                ('text', fields.TextField(default='', unique=False)),
                ('full_text', fields.TextField(default='', unique=False)),
                ('replies_to', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('raw_source', fields.BinaryField(null=True)),
                ('is_automated', fields.BooleanField(default=False)),
                ('automated_reason', fields.CharField(default='', max_length=255)),
                ('chat_ts', fields.CharField(null=True, max_length=32)),
                ('chat_files_posted', fields.BooleanField(default=False)),
                ('delivery_state', fields.CharEnumField(null=True, description='PENDING: pending\nSENT: sent\nFAILED: failed\nCANCELLED: cancelled', enum_type=DeliveryState, max_length=16)),
                ('delivery_error', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'messages', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One message in a conversation, either way.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Skill',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('chat_channel', fields.CharField(max_length=128)),
                ('description', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'skills', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A kind of request (billing, technical, ...) and the Slack channel that answers it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SkillExample',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('skill', fields.CharField(db_index=True, max_length=64)),
                ('text', fields.TextField(unique=False)),
                ('source', fields.CharField(default='config', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'skill_examples', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A labelled example for triage: from the config, a reassignment or a confirmation.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='StoredAttachment',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message', fields.ForeignKeyField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='attachments', on_delete=OnDelete.CASCADE)),
                ('filename', fields.CharField(max_length=255)),
                ('content_type', fields.CharField(max_length=255)),
                ('size', fields.IntField()),
                ('data', fields.BinaryField()),
            ],
            options={'table': 'attachments', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]

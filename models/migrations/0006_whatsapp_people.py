from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

from bot.shapes import ChannelKind, DeliveryState


class Migration(migrations.Migration):
    dependencies = [('models', '0006_end_job_function')]

    initial = False

    operations = [
        # Nullable without a default: PostgreSQL adds it without rewriting the messages table.
        ops.AddField(
            model_name='Message',
            name='template',
            field=fields.JSONField(null=True, description='An outbound template message (WhatsApp): ``{"name", "language", "parameters"}``.', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.CreateModel(
            name='SentPart',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message', fields.ForeignKeyField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='sent_parts', on_delete=OnDelete.CASCADE)),
                ('channel', fields.CharEnumField(description='EMAIL: email\nTELEGRAM: telegram\nWEBHOOK: webhook\nWHATSAPP: whatsapp', enum_type=ChannelKind, max_length=16)),
                ('external_id', fields.CharField(max_length=255)),
                ('state', fields.CharEnumField(default=DeliveryState.SENT, description='PENDING: pending\nSENT: sent\nFAILED: failed\nCANCELLED: cancelled\nDELIVERED: delivered\nREAD: read', enum_type=DeliveryState, max_length=16)),
                ('error', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'sent_parts', 'app': 'models', 'unique_together': (('channel', 'external_id'),), 'indexes': [Index(fields=['message_id'], name='idx_sent_parts_message')], 'pk_attr': 'id', 'table_description': 'One message a channel reported back on: a part of an agent\'s reply, with its own id.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Message',
            name='claims',
            field=fields.JSONField(null=True, description='What the sender says is theirs (``[["phone", "+49..."], ["email", "a@b.example"]]``).', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.CreateModel(
            name='CustomerDetail',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='details', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=32)),
                ('value', fields.CharField(max_length=512)),
                ('source', fields.CharField(default='', max_length=255)),
                ('evidence', fields.BooleanField(default=False)),
                ('confirmed_by', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'customer_details', 'app': 'models', 'indexes': [Index(fields=['customer_id'], name='idx_customer_details_customer'), Index(fields=['kind', 'value'], name='idx_customer_details_value')], 'pk_attr': 'id', 'table_description': 'A fact about a customer beyond the ways they wrote: a phone number, a company, ...'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CustomerLink',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='links', on_delete=OnDelete.CASCADE)),
                ('identity_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('conversation_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('former_name', fields.CharField(default='', max_length=255)),
                ('reason', fields.CharField(default='', max_length=255)),
                ('actor_id', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('undone_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'customer_links', 'app': 'models', 'indexes': [Index(fields=['customer_id'], name='idx_customer_links_customer')], 'pk_attr': 'id', 'table_description': 'Two customers joined into one person, by evidence or by a lead, undone by ``unlink``.'},
            bases=['Model'],
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [('models', '0006_whatsapp_people')]

    initial = False

    operations = [
        # A new, small table (rows go when a clock is met or its conversation closes): its
        # indexes are built with it, nothing to do concurrently.
        ops.CreateModel(
            name='SlaClock',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='sla_clocks', on_delete=OnDelete.CASCADE)),
                ('target', fields.CharField(max_length=16)),
                ('target_seconds', fields.IntField()),
                ('remaining_seconds', fields.IntField()),
                ('running_since', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('due_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('stage', fields.CharField(default='', max_length=8)),
                ('breach_audit_id', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'sla_clocks', 'app': 'models', 'unique_together': (('conversation_id', 'target'),), 'indexes': [Index(fields=['due_at'], name='idx_sla_clocks_due')], 'pk_attr': 'id', 'table_description': 'A deadline running for an open conversation: its first reply, next reply or resolution.'},
            bases=['Model'],
        ),
        # A constant default in the database: PostgreSQL adds the column to a filled table
        # without rewriting it, and rows written by other code (bulk SQL) get it too.
        ops.AddField(
            model_name='Conversation',
            name='tags',
            field=fields.CharField(default='', db_default='', max_length=255),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_team_workflow')]

    initial = False

    operations = [
        ops.AlterField(
            model_name='Message',
            name='conversation',
            field=fields.ForeignKeyField('models.Conversation', source_field='conversation_id', null=True, db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='Message',
            name='conversation_token',
            field=fields.CharField(null=True, max_length=16),
        ),
        ops.AddField(
            model_name='Message',
            name='thread_key',
            field=fields.CharField(null=True, max_length=255),
        ),
    ]

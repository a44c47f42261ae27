from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [('models', '0013_sqlite_lost_indexes')]

    initial = False

    operations = [
        # A constant default in the database: PostgreSQL adds the column to a filled table
        # without rewriting it, and rows written by other code (bulk SQL) get it too.
        ops.AddField(
            model_name='Conversation',
            name='sentiment_message',
            field=fields.IntField(default=0, db_default=0),
        ),
    ]

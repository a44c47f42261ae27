from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0009_report_facts')]

    initial = False

    operations = [
        # A new table: its indexes are built with it. The customers' two columns are added
        # without a rewrite (nullable, or a constant default in the database).
        ops.CreateModel(
            name='SurveyAnswer',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='survey_answers', on_delete=OnDelete.CASCADE)),
                ('rating', fields.IntField()),
                ('comment', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'survey_answers', 'app': 'models', 'unique_together': (('conversation_id',),), 'indexes': [Index(fields=['created_at'], name='idx_survey_answers_created')], 'pk_attr': 'id', 'table_description': "A customer's rating (1 to 5) of a closed conversation, with an optional comment."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Customer',
            name='survey_opt_out',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Customer',
            name='surveyed_at',
            field=fields.DatetimeField(null=True, description='When they were last asked for a rating (asked at most once in ``ask_again_after_days``).', auto_now=False, auto_now_add=False),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

# New tables only: nothing existing is locked or rebuilt.


class Migration(migrations.Migration):
    dependencies = [('models', '0007_deadlines_rules')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MessageVector',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message', fields.OneToOneField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='vector', on_delete=OnDelete.CASCADE)),
                ('conversation_id', fields.IntField()),
                ('skill', fields.CharField(default='', max_length=64)),
                ('language', fields.CharField(default='', max_length=16)),
                ('vector', fields.BinaryField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'message_vectors', 'app': 'models', 'indexes': [Index(fields=['conversation_id'], name='idx_message_vectors_conversation')], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='VectorRemoval',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message_id', fields.IntField()),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'vector_removals', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TextBlock',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('title', fields.CharField(unique=True, max_length=128)),
                ('skill', fields.CharField(default='', max_length=64)),
                ('text_de', fields.TextField(default='', unique=False)),
                ('text_en', fields.TextField(default='', unique=False)),
                ('updated_by', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'text_blocks', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SuggestionEvent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation_id', fields.IntField(db_index=True)),
                ('agent_id', fields.CharField(max_length=64)),
                ('source', fields.CharField(max_length=64)),
                ('action', fields.CharField(max_length=16)),
                ('used_message_id', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'suggestion_events', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='KnownProblem',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('title', fields.CharField(unique=True, max_length=128)),
                ('link', fields.CharField(default='', max_length=512)),
                ('created_by', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'known_problems', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ProblemLink',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation_id', fields.IntField(unique=True)),
                ('problem', fields.ForeignKeyField('models.KnownProblem', source_field='problem_id', db_constraint=True, to_field='id', related_name='links', on_delete=OnDelete.CASCADE)),
                ('created_by', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'problem_links', 'app': 'models', 'indexes': [Index(fields=['problem_id'], name='idx_problem_links_problem')], 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]

import functools
from json import dumps, loads

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

# A new table only: nothing existing is locked or rebuilt.


class Migration(migrations.Migration):
    dependencies = [('models', '0010_survey')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Spike',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('centroid_id', fields.IntField(unique=True)),
                ('example_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('member_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('count', fields.IntField(default=0)),
                ('usual', fields.FloatField(default=0.0)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('last_seen_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('ended_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('chat_channel', fields.CharField(default='', max_length=32)),
                ('chat_ts', fields.CharField(default='', max_length=32)),
                ('problem_id', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'spikes', 'app': 'models', 'indexes': [Index(fields=['ended_at'], name='idx_spikes_ended')], 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]

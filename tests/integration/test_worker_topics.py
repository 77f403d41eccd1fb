"""The worker's tables' changelogs exist, compacted as Faust declares them, before its consumer joins the group
(`agents.app.create_changelogs`): Faust declared them while joining, and an assignment made before a new changelog
showed in the broker's metadata left the worker idle for good."""
import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.app import create_app, create_changelogs
from infra import prometheus, tansu
from papertape.config import Settings


def test_the_changelogs_are_made_compacted_with_the_tables_partition_counts(broker):
    settings = Settings(namespace=broker.names.prefix, kafka_bootstrap=broker.bootstrap, session_partitions=3,
                        md_partitions=2)
    saved = dict(tansu._state), prometheus.FAUST.monitor, prometheus.FAUST.name_of  # create_app sets them process-wide
    try:
        app = create_app(settings, use_tansu=False)
    finally:
        tansu._state.update(saved[0])
        prometheus.FAUST.monitor, prometheus.FAUST.name_of = saved[1:]
    asyncio.run(create_changelogs(app, broker.bootstrap))
    want = {f"{settings.names.group(settings.app_id)}-market-state-changelog": 2,
            f"{settings.names.group(settings.app_id)}-engine-state-changelog": 3}

    async def described():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            topics = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(list(want))
                      if d["error_code"] == 0}
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in want])
            policy = {r[3]: dict((c[0], c[1]) for c in r[4])["cleanup.policy"] for r in response.resources}
            return topics, policy
        finally:
            await admin.close()

    topics, policy = asyncio.run(described())
    assert topics == want
    assert policy == {t: "compact" for t in want}

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from turnpike.core.health import HealthServer


async def test_health_endpoints() -> None:
    registry = CollectorRegistry()
    Counter("turnpike_test_events", "events", registry=registry).inc(3)
    state = {"ready": False}
    server = HealthServer(registry, lambda: state["ready"], lambda: {"keys": ["k1"]})
    host, port = await server.start("127.0.0.1", 0)
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/live") as resp:
                assert resp.status == 200
            async with session.get(base + "/ready") as resp:
                assert resp.status == 503
                assert await resp.json() == {"ready": False, "keys": ["k1"]}
            state["ready"] = True
            async with session.get(base + "/ready") as resp:
                assert resp.status == 200
            async with session.get(base + "/metrics") as resp:
                assert resp.status == 200
                assert "turnpike_test_events_total 3.0" in await resp.text()
    finally:
        await server.stop()

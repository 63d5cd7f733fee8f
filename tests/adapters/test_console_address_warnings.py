"""The editor's address check: the rule deliveries apply, made when a definition is validated."""

from __future__ import annotations

from typing import Any

from app.web.activity import address_warnings


def resolver(answers: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host}: name or service not known")
        return answers[host]
    return resolve


def webhook(url: str) -> dict[str, Any]:
    return {"action": {"type": "webhook", "url": url}}


async def test_a_host_resolving_to_a_refused_address_is_warned_of() -> None:
    resolve = resolver({"inside.example": ["10.0.0.7"], "public.example": ["93.184.215.14"]})
    warned = await address_warnings(webhook("https://inside.example/hook"), False, resolve)
    assert warned == [{"field": "action.url", "message": "inside.example resolves to 10.0.0.7 is a private address: "
                                                         "deliveries will be refused (TRIGGERS_ALLOW_PRIVATE_URLS)"}]
    assert await address_warnings(webhook("https://public.example/hook"), False, resolve) == []
    assert await address_warnings(webhook("https://inside.example/hook"), True, resolve) == []


async def test_a_host_that_does_not_resolve_is_warned_of_and_a_delivery_url_is_checked_too() -> None:
    definition = {"action": {"type": "fire_recommend", "decisionFlowId": "f", "deliveryUrl": "http://nowhere.example/"}}
    warned = await address_warnings(definition, False, resolver({}))
    assert warned == [{"field": "action.deliveryUrl", "message": "nowhere.example does not resolve"}]


async def test_other_actions_and_malformed_urls_are_left_to_the_compiler() -> None:
    resolve = resolver({})
    assert await address_warnings({"action": {"type": "update_attribute"}}, False, resolve) == []
    assert await address_warnings(webhook("not a url"), False, resolve) == []
    assert await address_warnings([], False, resolve) == []

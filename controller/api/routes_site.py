"""What a client needs to sign for this site: ``GET /v1/sites/{site}`` (anyone, read-only).

A wallet or :class:`controller.client.PeerGridClient` signs two kinds of messages, and both
name this server and chain exactly:

* EIP-712 orders (:mod:`adapters.chain.typed_data`): the domain ``{"name": "PeerGrid",
  "version": "1", "chainId", "verifyingContract"}`` (the site's chain id and Settlement
  contract) and the message types;
* the EIP-4361 sign-in message (:mod:`controller.auth`): its ``domain``, ``URI`` and
  ``Chain ID``.

The reply also gives the interval length and gate closure lead [s] (orders for interval
``T`` are accepted while ``now < T - gate_closure_s``) and the server's clock [Unix s], so a
client can pick an open interval and write ``Issued At`` and ``deadline`` in the server's
time. Nothing here is secret: the same values are in every signed message.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from adapters.chain.typed_data import DOMAIN_TYPE, TYPES, domain
from controller.api.deps import SiteDep
from controller.api.models import ErrorBody
from controller.auth import STATEMENT

ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (404, 422)}

router = APIRouter(prefix="/v1/sites/{site}", tags=["service"], responses=ERRORS)


class SiteOut(BaseModel):
    """The site, and what every signed message must name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: str = Field(description="the site's id in the paths")
    name: str
    interval_s: int = Field(description="interval length [s]")
    gate_closure_s: int = Field(
        description=(
            "orders for interval T close at T - gate_closure_s [s before T]: the site "
            "file's, or the community's governed value in force"
        )
    )
    now_s: int = Field(description="the service's clock [Unix s]")
    chain_id: int = Field(description="the site's chain id (EIP-155)")
    verifying_contract: str = Field(description="the site's Settlement contract (EIP-55)")
    eip712_domain: dict[str, Any] = Field(
        description="the EIP-712 domain of every order, standing order and cancel"
    )
    eip712_types: dict[str, list[dict[str, str]]] = Field(
        description="EIP712Domain and the three message types, as eth_signTypedData_v4 takes"
    )
    signin_domain: str = Field(description="EIP-4361: the domain the message must name")
    signin_uri: str = Field(description="EIP-4361: the URI the message must name")
    signin_statement: str = Field(description="EIP-4361: the statement clients write")
    participants: list[str] = Field(description="the site's participant ids")


@router.get("", response_model=SiteOut, summary="the site and what signed messages name")
def get_site(service: SiteDep) -> SiteOut:
    """The site's EIP-712 domain and types, sign-in domain and URI, intervals and clock."""
    intake = service.intake
    dom = domain(intake.chain_id, intake.verifying_contract)
    types: dict[str, list[dict[str, str]]] = {"EIP712Domain": [dict(f) for f in DOMAIN_TYPE]}
    for kind, fields in TYPES.items():
        types[kind.value] = [dict(f) for f in fields]
    return SiteOut(
        site_id=service.site_id,
        name=service.site.name,
        interval_s=service.site.interval_s,
        gate_closure_s=service.runtime.store.gate_closure_in_force(
            service.site.gate_closure_s, service.site.interval_s
        ),
        now_s=int(service.now().timestamp()),
        chain_id=intake.chain_id,
        verifying_contract=str(dom["verifyingContract"]),
        eip712_domain=dom,
        eip712_types=types,
        signin_domain=service.auth.domain,
        signin_uri=service.auth.uri,
        signin_statement=STATEMENT,
        participants=[str(p.id) for p in service.site.participants],
    )

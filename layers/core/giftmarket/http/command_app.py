"""The command API: every change runs as one unit of work on the primary.

Routes are thin: they turn a request into a command, hand it to the runner (which owns the
transaction, idempotency and the consistency token) and shape the answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from giftmarket.commands import accounts, catalog, orders, trading
from giftmarket.commands.context import InvalidCredentials
from giftmarket.commands.ports import InvalidToken
from giftmarket.commands.sign_in import guarded
from giftmarket.domain.errors import (
    BidNotOpen,
    CouponUnavailable,
    CrossesBook,
    EmailTaken,
    ImageUnusable,
    InsufficientPoints,
    NoMatchingBid,
    NotFound,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
    VoucherDuplicate,
    VoucherExpiring,
)
from giftmarket.domain.ids import is_ulid
from giftmarket.http import schemas as s
from giftmarket.http.auth import CurrentUser, Tokens, TokenService
from giftmarket.http.command_runner import Credentials, Run
from giftmarket.http.deps import ContainerDep
from giftmarket.http.problems import ADMIN_ERRORS as _ADMIN_ERRORS
from giftmarket.http.problems import COMMAND_ERRORS as _ERRORS
from giftmarket.http.problems import LOGIN_ERRORS as _LOGIN_ERRORS
from giftmarket.http.problems import SOCIAL_SIGN_IN_ERRORS as _SOCIAL_ERRORS
from giftmarket.http.problems import ProblemApp, install_problem_handlers, with_conflicts

router = APIRouter()


def entity_id(value: str, resource: str) -> str:
    """Ids are ULIDs: anything else cannot exist, so it is simply not found."""
    if not is_ulid(value):
        raise NotFound(resource)
    return value


def _credentials(email: str, password: str, tokens: TokenService) -> Credentials:
    """A token in each answer, never in the idempotency record; a replay signs in again."""
    return Credentials(accounts.SignIn(email, password), tokens.issue, InvalidCredentials)


@router.post(
    "/api/auth/signup",
    status_code=201,
    response_model=s.AuthPublic,
    responses=with_conflicts(_ERRORS, EmailTaken),
)
async def signup(body: s.SignupRequest, run: Run, tokens: Tokens) -> Any:
    """Create an account (on a local stack, an email listed in ADMIN_EMAILS becomes an
    admin; on a deployed stage an operator grants admin rights)."""
    command = accounts.SignUp(body.email, body.password, body.nickname)
    return run(
        command,
        body=body,
        present=lambda a: {"user_id": a.user_id},
        credentials=_credentials(body.email, body.password, tokens),
    )


@router.post("/api/auth/login", response_model=s.AuthPublic, responses=_LOGIN_ERRORS)
async def login(
    body: s.LoginRequest, run: Run, tokens: Tokens, container: ContainerDep, request: Request
) -> Any:
    """Exchange email and password for a bearer token (429 after repeated failures)."""
    command = accounts.SignIn(body.email, body.password)
    # API Gateway's requestContext.http.sourceIp, which Mangum hands over as the client.
    address = request.client.host if request.client else None
    return guarded(
        container.sign_in_guard,
        body.email,
        address,
        lambda: run(
            command,
            body=body,
            present=lambda a: {"user_id": a.user_id},
            credentials=_credentials(body.email, body.password, tokens),
        ),
    )


@router.post(
    "/api/auth/oidc/{provider}",
    response_model=s.SocialAuthPublic,
    responses=with_conflicts(_SOCIAL_ERRORS, EmailTaken)
    | {201: {"model": s.SocialAuthPublic, "description": "First sign-in: a new account"}},
)
async def social_sign_in(
    provider: str, body: s.SocialSignInRequest, run: Run, tokens: Tokens, container: ContainerDep
) -> Any:
    """Sign in with a Kakao, Google or Apple (OpenID Connect) ID token: 201 and a new
    account on the first sign-in, 200 afterwards."""
    identity = container.id_tokens.verify(provider, body.id_token, body.nonce)
    return run(
        accounts.SocialSignIn(identity, body.nickname),
        # Remembered by what names this token (provider, subject, iat, nonce), never by the
        # token: nothing derived from it is kept.
        body=s.SocialSignInFingerprint(
            provider=provider,
            subject=identity.subject,
            issued_at=identity.issued_at,
            nonce=body.nonce,
            nickname=body.nickname,
        ),
        present=lambda a: {"user_id": a.user_id, "created": a.created},
        status_of=lambda a: 201 if a.created else 200,
        credentials=Credentials(
            accounts.FindSocialAccount(provider, identity.subject), tokens.issue, InvalidToken
        ),
    )


@router.post("/api/points/charge", response_model=s.BalancePublic, responses=_ERRORS)
async def charge_points(body: s.ChargeRequest, caller: CurrentUser, run: Run) -> Any:
    """Add points to the caller's available balance."""
    command = accounts.ChargePoints(caller.user_id, body.amount)
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda b: {"available_points": b.available_points},
    )


@router.post(
    "/api/products", status_code=201, response_model=s.ProductCreated, responses=_ADMIN_ERRORS
)
async def register_product(body: s.ProductCreate, caller: CurrentUser, run: Run) -> Any:
    """Register a product (admins only)."""
    command = catalog.RegisterProduct(
        caller.user_id, body.name, body.brand, body.category, body.face_value
    )
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda product_id: {"product_id": product_id},
    )


def _set_like(product_id: str, caller: CurrentUser, run: Run, liked: bool) -> Any:
    command = catalog.SetLike(caller.user_id, entity_id(product_id, "product"), liked)
    return run(
        command,
        scope=caller.user_id,
        present=lambda _: None,
    )


@router.post(
    "/api/products/{product_id}/likes", status_code=204, response_model=None, responses=_ERRORS
)
async def like_product(product_id: str, caller: CurrentUser, run: Run) -> Any:
    """Like a product; liking twice is the same as once."""
    return _set_like(product_id, caller, run, liked=True)


@router.delete(
    "/api/products/{product_id}/likes", status_code=204, response_model=None, responses=_ERRORS
)
async def unlike_product(product_id: str, caller: CurrentUser, run: Run) -> Any:
    """Take a like back; unliking twice is the same as once."""
    return _set_like(product_id, caller, run, liked=False)


@router.post("/api/images", status_code=201, response_model=s.ImageUploadSlot, responses=_ERRORS)
async def request_image_upload(body: s.ImageUploadRequest, caller: CurrentUser, run: Run) -> Any:
    """Get a presigned S3 PUT URL for a voucher image (PNG, JPEG or WebP, at most 5 MiB)."""
    command = catalog.RequestImageUpload(caller.user_id, body.content_type)
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda slot: {"image_id": slot.image_id, "upload_url": slot.upload_url},
    )


@router.post(
    "/api/products/{product_id}/sell-bids",
    status_code=201,
    response_model=s.SellBidPlaced,
    responses=with_conflicts(
        _ERRORS, CrossesBook, ImageUnusable, VoucherDuplicate, VoucherExpiring
    ),
)
async def place_sell_bid(
    product_id: str, body: s.SellBidCreate, caller: CurrentUser, run: Run
) -> Any:
    """Post an ask with its uploaded voucher image and the voucher's facts; refused when it
    would cross the book, when the voucher is listed or sold already, or expires too soon."""
    command = trading.PlaceSellBid(
        caller.user_id,
        entity_id(product_id, "product"),
        body.price,
        body.image_id,
        body.barcode,
        body.expires_on,
    )
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda bid: {"sell_bid_id": bid.bid_id, "status": bid.status},
    )


@router.delete(
    "/api/sell-bids/{sell_bid_id}",
    status_code=204,
    response_model=None,
    responses=with_conflicts(_ERRORS, BidNotOpen),
)
async def cancel_sell_bid(sell_bid_id: str, caller: CurrentUser, run: Run) -> Any:
    """Cancel one of the caller's open asks."""
    command = trading.CancelSellBid(caller.user_id, entity_id(sell_bid_id, "sell bid"))
    return run(
        command,
        scope=caller.user_id,
        present=lambda _: None,
    )


@router.post(
    "/api/products/{product_id}/buy-bids",
    status_code=201,
    response_model=s.BuyBidPlaced,
    responses=with_conflicts(_ERRORS, CrossesBook, InsufficientPoints),
)
async def place_buy_bid(
    product_id: str, body: s.BuyBidCreate, caller: CurrentUser, run: Run
) -> Any:
    """Bid to buy; the price is escrowed from available points at once."""
    command = trading.PlaceBuyBid(caller.user_id, entity_id(product_id, "product"), body.price)
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda bid: {"buy_bid_id": bid.bid_id, "status": bid.status},
    )


@router.delete(
    "/api/buy-bids/{buy_bid_id}",
    status_code=204,
    response_model=None,
    responses=with_conflicts(_ERRORS, BidNotOpen),
)
async def cancel_buy_bid(buy_bid_id: str, caller: CurrentUser, run: Run) -> Any:
    """Cancel one of the caller's open buy bids; its escrow returns to available points."""
    command = trading.CancelBuyBid(caller.user_id, entity_id(buy_bid_id, "buy bid"))
    return run(
        command,
        scope=caller.user_id,
        present=lambda _: None,
    )


@router.post(
    "/api/products/{product_id}/buy-now",
    status_code=201,
    response_model=s.PurchasePublic,
    responses=with_conflicts(
        _ERRORS, NoMatchingBid, InsufficientPoints, CouponUnavailable, BidNotOpen
    ),
)
async def buy_now(product_id: str, body: s.BuyNowRequest, caller: CurrentUser, run: Run) -> Any:
    """Buy the cheapest open ask at or below `price`, optionally with a coupon."""
    command = trading.BuyNow(
        caller.user_id, entity_id(product_id, "product"), body.price, body.coupon_id
    )
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda p: {
            "order_id": p.order_id,
            "price": p.price,
            "discount": p.discount,
            "paid": p.paid,
            "status": p.status,
        },
    )


@router.post(
    "/api/products/{product_id}/sell-now",
    status_code=201,
    response_model=s.SalePublic,
    responses=with_conflicts(
        _ERRORS, NoMatchingBid, ImageUnusable, VoucherDuplicate, VoucherExpiring, BidNotOpen
    ),
)
async def sell_now(product_id: str, body: s.SellNowRequest, caller: CurrentUser, run: Run) -> Any:
    """Sell into the highest open buy bid at or above `price`, with the voucher image and
    the voucher's facts."""
    command = trading.SellNow(
        caller.user_id,
        entity_id(product_id, "product"),
        body.price,
        body.image_id,
        body.barcode,
        body.expires_on,
    )
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda sale: {
            "order_id": sale.order_id,
            "price": sale.price,
            "status": sale.status,
        },
    )


@router.post(
    "/api/orders/{order_id}/confirm",
    response_model=s.OrderStatusPublic,
    responses=with_conflicts(_ERRORS, OrderNotConfirmable),
)
async def confirm_order(order_id: str, caller: CurrentUser, run: Run) -> Any:
    """The buyer confirms receipt: the order becomes COMPLETED."""
    command = trading.ConfirmOrder(caller.user_id, entity_id(order_id, "order"))
    return run(
        command,
        scope=caller.user_id,
        present=lambda status: {"order_id": command.order_id, "status": status},
    )


@router.post(
    "/api/orders/{order_id}/dispute",
    response_model=s.OrderStatusPublic,
    responses=with_conflicts(_ERRORS, OrderNotDisputable),
)
async def open_dispute(order_id: str, body: s.DisputeRequest, caller: CurrentUser, run: Run) -> Any:
    """The buyer reports the delivered voucher unusable: the order becomes DISPUTED, is
    neither auto-completed nor settled, and waits for an admin's resolution."""
    command = orders.OpenDispute(caller.user_id, entity_id(order_id, "order"), body.reason)
    return run(command, scope=caller.user_id, body=body, present=_order_state)


@router.post(
    "/api/admin/orders/{order_id}/inspection",
    response_model=s.OrderStatusPublic,
    responses=with_conflicts(_ADMIN_ERRORS, OrderNotPending),
)
async def decide_inspection(
    order_id: str, body: s.InspectionDecision, caller: CurrentUser, run: Run
) -> Any:
    """An admin passes (delivered: PAID) or fails (REFUNDED) an INSPECTING order."""
    command = orders.DecideInspection(
        caller.user_id, entity_id(order_id, "order"), body.result, body.reason
    )
    return run(command, scope=caller.user_id, body=body, present=_order_state)


@router.post(
    "/api/admin/orders/{order_id}/resolution",
    response_model=s.OrderStatusPublic,
    responses=with_conflicts(_ADMIN_ERRORS, OrderNotPending),
)
async def resolve_dispute(
    order_id: str, body: s.DisputeResolution, caller: CurrentUser, run: Run
) -> Any:
    """An admin refunds (REFUNDED) or rejects (COMPLETED) a DISPUTED order."""
    command = orders.ResolveDispute(
        caller.user_id, entity_id(order_id, "order"), body.decision, body.note
    )
    return run(command, scope=caller.user_id, body=body, present=_order_state)


def _order_state(state: orders.OrderState) -> dict[str, str]:
    return {"order_id": state.order_id, "status": state.status}


@router.post(
    "/api/admin/coupons", status_code=201, response_model=s.CouponCreated, responses=_ADMIN_ERRORS
)
async def issue_coupon(body: s.CouponCreate, caller: CurrentUser, run: Run) -> Any:
    """Issue a coupon to a user (admins only)."""
    command = catalog.IssueCoupon(
        caller.user_id, body.user_id, body.name, body.discount_amount, body.expires_at
    )
    return run(
        command,
        scope=caller.user_id,
        body=body,
        present=lambda coupon_id: {"coupon_id": coupon_id},
    )


def create_command_app() -> FastAPI:
    app = ProblemApp(
        # API Gateway routes exact paths; a redirect to a slash-less URL (built from Mangum's
        # placeholder host) would be wrong, so a trailing slash is simply not found.
        redirect_slashes=False,
        title="giftmarket command API",
        version="0.1.0",
        description="Writes: one transaction on the primary per command, events to the outbox.",
    )
    install_problem_handlers(app)
    app.include_router(router)
    return app

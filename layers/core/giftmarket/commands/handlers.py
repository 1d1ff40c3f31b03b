"""Every command type and the one handler that runs it (cosmicpython's COMMAND_HANDLERS).

The composition root gives this mapping to the command executor; entry points build a
command object and `execute` it. A new command is a dataclass subclassing `Command[R]` in
its module, its handler beside it, and one line here (tests/unit/test_command_handlers.py
fails for a command with no line, or with two).
"""

from __future__ import annotations

from giftmarket.commands import accounts, admins, catalog, orders, trading
from giftmarket.commands.executor import CommandHandlers, handles

COMMAND_HANDLERS = CommandHandlers(
    handles(accounts.SignUp, accounts.sign_up),
    handles(accounts.SignIn, accounts.sign_in),
    handles(accounts.SocialSignIn, accounts.social_sign_in),
    handles(accounts.FindSocialAccount, accounts.find_social_account),
    handles(accounts.ChargePoints, accounts.charge_points),
    handles(accounts.IssueWelcomeCoupon, accounts.issue_welcome_coupon),
    handles(admins.SetAdmin, admins.set_admin),
    handles(admins.ListAdminRights, admins.list_admin_rights),
    handles(catalog.RegisterProduct, catalog.register_product),
    handles(catalog.SetLike, catalog.set_like),
    handles(catalog.RequestImageUpload, catalog.request_image_upload),
    handles(catalog.IssueCoupon, catalog.issue_coupon),
    handles(trading.PlaceSellBid, trading.place_sell_bid),
    handles(trading.CancelSellBid, trading.cancel_sell_bid),
    handles(trading.PlaceBuyBid, trading.place_buy_bid),
    handles(trading.CancelBuyBid, trading.cancel_buy_bid),
    handles(trading.BuyNow, trading.buy_now),
    handles(trading.SellNow, trading.sell_now),
    handles(trading.ConfirmOrder, trading.confirm_order),
    handles(orders.OpenDispute, orders.open_dispute),
    handles(orders.DecideInspection, orders.decide_inspection),
    handles(orders.ResolveDispute, orders.resolve_dispute),
)

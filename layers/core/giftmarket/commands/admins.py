"""Admin rights, granted and revoked by an operator (`giftmarket admin`, or the migration
function's event in AWS), never by signing up: emails are not verified, so an address is no
proof of who holds it. Every change is recorded with who made it and when; the rights are
`users.is_admin`, read from the primary by every admin command, so a revoke takes effect
on the next request."""

from __future__ import annotations

from dataclasses import dataclass

from giftmarket.commands.context import CommandContext, found
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain.errors import DomainError
from giftmarket.domain.users import AdminRightsChange, normalize_email

HISTORY_SHOWN = 50


class NoAccountForEmail(DomainError):
    code = "no_account"
    default_detail = "No account has that email: the person must sign up first."


@dataclass(frozen=True)
class AdminRightsResult:
    user_id: str
    email: str
    is_admin: bool
    change: AdminRightsChange | None  # None: the user already had (or lacked) the rights


@dataclass(frozen=True)
class SetAdmin(Command[AdminRightsResult]):
    email: str
    is_admin: bool
    actor: str  # who asked: an operator's name, an IAM principal


def set_admin(uow: UnitOfWork, command: SetAdmin, ctx: CommandContext) -> AdminRightsResult:
    account = uow.users.get_by_email(command.email)
    if account is None:
        raise NoAccountForEmail(f"No account has the email {normalize_email(command.email)}.")
    user = found(uow.users.get(account.id, lock=True), "user")
    change = user.set_admin(command.is_admin, actor=command.actor, now=ctx.clock())
    if change is not None:
        uow.admin_rights.record(change)
    return AdminRightsResult(user.id, normalize_email(command.email), user.is_admin, change)


@dataclass(frozen=True)
class AdminRights:
    admins: list[tuple[str, str]]  # (user_id, email), by email
    history: list[AdminRightsChange]  # newest first


@dataclass(frozen=True)
class ListAdminRights(Command[AdminRights]):
    """Read on the primary, as admin commands read the rights."""


def list_admin_rights(
    uow: UnitOfWork, command: ListAdminRights, ctx: CommandContext
) -> AdminRights:
    # Only accounts with an email can be admins (User.set_admin).
    admins = [(user.id, user.email or "") for user in uow.users.list_admins()]
    return AdminRights(admins, uow.admin_rights.history(HISTORY_SHOWN))

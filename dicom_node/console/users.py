"""Console accounts: argon2 passwords, lock-out, API tokens, login sessions, the action log.

Plain functions over a session factory; the CLI (``meddet user``) and the web app share them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.accounts import ApiToken, ConsoleAction, ConsoleSession, Role, User
from dicom_node.audit.db import transaction
from dicom_node.audit.models import utcnow

HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))  # unknown users cost the same time
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "mdt_"


class UserError(ValueError):
    """A user that cannot be added, found or changed; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    id: int
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


@dataclass(frozen=True)
class Login:
    """The result of a password check: ``user`` when it passed, else why not (for the log)."""

    user: Principal | None
    reason: str  # ok / wrong_password / unknown_user / locked
    locked_now: bool = False


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(user: User) -> Principal:
    return Principal(user.id, user.name, Role(user.role))


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")


def record(
    session: Session,
    user_name: str | None,
    action: str,
    outcome: str = "ok",
    target: str | None = None,
    detail: str | None = None,
    address: str | None = None,
) -> None:
    """One row of the console's action log (in the caller's transaction)."""
    session.add(
        ConsoleAction(
            at=utcnow(),
            user_name=user_name,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail[:2000] if detail else detail,
            address=address,
        )
    )


def add_user(
    sessions: sessionmaker[Session], name: str, role: Role | str, password: str, by: str | None = None
) -> Principal:
    if not NAME.match(name):
        raise UserError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
    check_password_rules(password)
    role = Role(role)
    with transaction(sessions) as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise UserError(f"user {name} exists")
        user = User(name=name, role=role, password_hash=HASHER.hash(password), created_at=utcnow(), failed_logins=0)
        session.add(user)
        session.flush()
        record(session, by, "user_add", target=name, detail=role.value)
        return _principal(user)


def set_password(sessions: sessionmaker[Session], name: str, password: str, by: str | None = None) -> None:
    check_password_rules(password)
    with transaction(sessions) as session:
        user = _get(session, name)
        user.password_hash = HASHER.hash(password)
        user.failed_logins = 0
        user.locked_until = None
        session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
        record(session, by, "user_password", target=name)


def remove_user(sessions: sessionmaker[Session], name: str, by: str | None = None) -> None:
    with transaction(sessions) as session:
        user = _get(session, name)
        session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
        session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
        session.delete(user)
        record(session, by, "user_remove", target=name)


def unlock_user(sessions: sessionmaker[Session], name: str, by: str | None = None) -> None:
    with transaction(sessions) as session:
        user = _get(session, name)
        user.failed_logins = 0
        user.locked_until = None
        record(session, by, "user_unlock", target=name)


def list_users(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    now = utcnow()
    with sessions() as session:
        users = list(session.scalars(select(User).order_by(User.name)))
        counts = dict(session.execute(select(ApiToken.user_id, func.count()).group_by(ApiToken.user_id)).all())
    return [
        {
            "name": u.name,
            "role": Role(u.role).value,
            "created_at": u.created_at.isoformat(timespec="seconds"),
            "last_login_at": u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else None,
            "locked_until": u.locked_until.isoformat(timespec="seconds")
            if u.locked_until and u.locked_until > now
            else None,
            "api_tokens": counts.get(u.id, 0),
        }
        for u in users
    ]


def _get(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"no user {name}")
    return user


def authenticate(
    sessions: sessionmaker[Session],
    name: str,
    password: str,
    *,
    attempts: int,
    lockout: timedelta,
    address: str | None = None,
    via: str = "login",
) -> Login:
    """Check a password; ``attempts`` wrong ones in a row lock the user for ``lockout``.

    A locked user is refused even with the right password until the lock-out has passed.
    Every failure and each lock-out is recorded in the action log.
    """
    now = utcnow()
    with sessions() as session:
        user = session.scalar(select(User).where(User.name == name)) if NAME.match(name) else None
        stored = user.password_hash if user is not None else _DUMMY_HASH
        locked = user is not None and user.locked_until is not None and user.locked_until > now
    try:
        ok = HASHER.verify(stored, password) and user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    with transaction(sessions) as session:
        if user is None:
            record(session, None, via, "refused", detail="unknown user", address=address)
            return Login(None, "unknown_user")
        if locked:
            record(session, name, via, "refused", detail="locked out", address=address)
            return Login(None, "locked")
        if not ok:
            session.execute(update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1))
            row = session.get(User, user.id)
            assert row is not None
            session.refresh(row)
            locked_now = row.failed_logins >= attempts
            if locked_now:
                row.locked_until = now + lockout
                row.failed_logins = 0
            record(
                session,
                name,
                via,
                "refused",
                detail="wrong password" + (f"; locked out for {lockout}" if locked_now else ""),
                address=address,
            )
            return Login(None, "wrong_password", locked_now)
        row = session.get(User, user.id)
        assert row is not None
        row.failed_logins = 0
        row.locked_until = None
        if via == "login":
            row.last_login_at = now
            record(session, name, via, "ok", address=address)
        if HASHER.check_needs_rehash(row.password_hash):
            row.password_hash = HASHER.hash(password)
        return Login(_principal(row), "ok")


# ---- API tokens ---------------------------------------------------------------------------


def new_token(sessions: sessionmaker[Session], name: str, by: str | None = None) -> str:
    """A new API token for ``name`` (shown once; only its digest is kept)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(sessions) as session:
        user = _get(session, name)
        session.add(ApiToken(user_id=user.id, token_sha256=digest(token), created_at=utcnow()))
        record(session, by, "token_add", target=name)
    return token


def revoke_tokens(sessions: sessionmaker[Session], name: str, by: str | None = None) -> int:
    with transaction(sessions) as session:
        user = _get(session, name)
        n = cast("CursorResult[Any]", session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))).rowcount
        record(session, by, "token_revoke", target=name, detail=f"{n} token(s)")
        return int(n or 0)


def user_for_token(sessions: sessionmaker[Session], token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    with transaction(sessions) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest(token)))
        if row is None:
            return None
        user = session.get(User, row.user_id)
        if user is None:
            return None
        if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
            row.last_used_at = now
        return _principal(user)


# ---- browser sessions ---------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    user: Principal
    csrf_token: str


def open_session(sessions: sessionmaker[Session], user: Principal, hours: float) -> str:
    """A new login session; returns the cookie value (only its digest is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(
            ConsoleSession(
                token_sha256=digest(token),
                user_id=user.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + timedelta(hours=hours),
                last_seen_at=now,
            )
        )
    return token


def find_session(sessions: sessionmaker[Session], token: str) -> WebSession | None:
    now = utcnow()
    with sessions() as session:
        row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_sha256 == digest(token)))
        if row is None or row.expires_at <= now:
            return None
        user = session.get(User, row.user_id)
        if user is None:
            return None
        return WebSession(_principal(user), row.csrf_token)


def close_session(sessions: sessionmaker[Session], token: str, address: str | None = None) -> None:
    with transaction(sessions) as session:
        row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_sha256 == digest(token)))
        if row is None:
            return
        user = session.get(User, row.user_id)
        session.delete(row)
        record(session, user.name if user else None, "logout", address=address)


def recent_actions(sessions: sessionmaker[Session], limit: int = 200) -> list[dict[str, Any]]:
    with sessions() as session:
        rows = session.scalars(select(ConsoleAction).order_by(ConsoleAction.id.desc()).limit(limit))
        return [
            {
                "at": r.at.isoformat(timespec="seconds"),
                "user": r.user_name,
                "action": r.action,
                "target": r.target,
                "outcome": r.outcome,
                "detail": r.detail,
                "address": r.address,
            }
            for r in rows
        ]

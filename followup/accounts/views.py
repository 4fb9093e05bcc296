"""Sign-in, sign-out, password change, and the admins' list of staff accounts."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, flash, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask_login import login_user, logout_user

from followup.accounts.forms import LoginForm, NewUserForm, PasswordForm
from followup.accounts.service import (
    change_password,
    create_user,
    list_users,
    record_sign_out,
    reset_password,
    set_user_active,
    sign_in,
)
from followup.errors import NotFound, ValidationError
from followup.web import MUST_CHANGE_PASSWORD, StaffUser, db, runtime, safe_next, staff

log = logging.getLogger(__name__)

bp = Blueprint("accounts", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    error = None
    if request.method == "POST":
        result = sign_in(
            session=db(),
            email=form.email.data or "",
            password=form.password.data or "",
            now=runtime().clock.now(),
        )
        db().commit()  # the failure counter and lockout are kept either way
        if result.user is not None:
            session.clear()  # a fresh session: nothing from before signing in survives
            login_user(StaffUser.from_user(result.user))
            session.permanent = True
            if result.must_change_password:
                session[MUST_CHANGE_PASSWORD] = True
                flash("You signed in with a one-time password: choose your own now.")
                return redirect("/account/password")
            return redirect(safe_next(request.args.get("next")) or "/patients")
        error = result.error
    return render_template("accounts/login.html", form=form, error=error), (401 if error else 200)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    record_sign_out(session=db(), user_id=staff().id, now=runtime().clock.now())
    db().commit()
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect("/login")


@bp.route("/account/password", methods=["GET", "POST"])
def password() -> ResponseReturnValue:
    form = PasswordForm()
    forced = bool(session.get(MUST_CHANGE_PASSWORD))
    if request.method == "POST":
        try:
            user = change_password(
                session=db(),
                user_id=staff().id,
                current_password=form.current_password.data or "",
                new_password=form.new_password.data or "",
                confirm_password=form.confirm_password.data or "",
                now=runtime().clock.now(),
            )
        except ValidationError as exc:
            db().rollback()
            form[exc.field].errors = [exc.message]
            return render_template("accounts/password.html", form=form, forced=forced), 422
        db().commit()
        session.pop(MUST_CHANGE_PASSWORD, None)
        login_user(StaffUser.from_user(user))  # the new password's fingerprint
        flash("Your password is changed.")
        return redirect("/patients")
    return render_template("accounts/password.html", form=form, forced=forced)


@bp.route("/users", methods=["GET", "POST"])
def users() -> ResponseReturnValue:
    """Admins only (see followup.web.ADMIN_PATHS): list and create staff accounts."""
    form = NewUserForm()
    status = 200
    if request.method == "POST":
        try:
            user = create_user(
                session=db(),
                email=form.email.data or "",
                role=form.role.data or "",
                password=form.password.data or "",
                now=runtime().clock.now(),
                actor=staff().email,
            )
        except ValidationError as exc:
            db().rollback()
            form[exc.field].errors = [exc.message]
            status = 422
        else:
            db().commit()
            flash(f"Account {user.email} created ({user.role}). Give them the password in person.")
            return redirect("/users")
    return render_template("accounts/users.html", form=form, users=list_users(session=db())), status


@bp.post("/users/<int:user_id>/active")
def user_active(user_id: int) -> ResponseReturnValue:
    """Admins only: deactivate or reactivate an account."""
    active = request.form.get("active") == "1"
    try:
        user = set_user_active(
            session=db(),
            user_id=user_id,
            active=active,
            actor=staff().email,
            now=runtime().clock.now(),
        )
    except NotFound:
        abort(404)
    except ValidationError as exc:
        db().rollback()
        flash(f"Not changed: the account {exc.message}.")
        return redirect("/users")
    db().commit()
    flash(f"Account {user.email} {'reactivated' if active else 'deactivated'}.")
    return redirect("/users")


@bp.post("/users/<int:user_id>/password")
def user_password_reset(user_id: int) -> ResponseReturnValue:
    """Admins only: a one-time password, shown on this page once, never stored in a cookie."""
    try:
        password = reset_password(
            session=db(), user_id=user_id, actor=staff().email, now=runtime().clock.now()
        )
    except NotFound:
        abort(404)
    db().commit()
    user = next(u for u in list_users(session=db()) if u.id == user_id)
    return render_template(
        "accounts/users.html",
        form=NewUserForm(formdata=None),
        users=list_users(session=db()),
        one_time=(user.email, password),
    )

from followup.app import create_app
from followup.runtime import Runtime


def test_healthz_answers_ok_with_the_database_reachable(runtime: Runtime) -> None:
    app = create_app(runtime.settings, runtime=runtime)
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "transport": "scripted"}


def test_healthz_is_503_when_the_database_is_gone(runtime: Runtime) -> None:
    import sqlalchemy as sa

    from followup.db import make_session_factory

    broken = make_session_factory(sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    runtime.session_factory = broken
    app = create_app(runtime.settings, runtime=runtime)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503

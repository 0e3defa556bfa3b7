"""The support agents' and reviewers' pages: server-rendered HTML, read views only (the JSON API
acts: docs/objections.md). No script, no external asset: inline CSS and an inline SVG chart.

* `GET /ui/decisions/{id}`: the rationale document (`engine.rationales`) as a page: the summary,
  the reasons as the customer reads them, what would have changed the outcome, a waterfall of
  the contributions from the base value to the raw margin, the feature values against typical
  ones, and the decision's objection cases with their history.
* `GET /ui/objections`: the reviewers' queue, nearest deadline first (`?status=`, `?overdue=`).

A browser sends no API key of its own: `/ui/login` takes one in a form and keeps it in an
HttpOnly, SameSite=Strict cookie that only these read-only pages accept (api/auth.py). The
key's name is the reader, passed on to the rationale, whose every read is audited. Errors (an
unknown decision) answer with the app's usual error body.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Annotated, Any, get_args
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import COOKIE, authenticate
from api.deps import CaseReader, DeskDep, RationalesDep, RuntimeDep
from api.routes.objections import Status
from engine.cases import OPEN
from engine.errors import Forbidden
from explanations.counterfactual import threshold_margin

router = APIRouter(prefix="/ui", tags=["pages"], include_in_schema=False)
PAGE_ROLES = frozenset({"support", "reviewer", "privacy"})  # the keys a page session may hold
STATUSES: tuple[str, ...] = get_args(Status)
TOP_BARS = 10  # the waterfall's steps; the rest are summed into one
FRAUD, SAFE, NEUTRAL = "#c0392b", "#2e8b57", "#7f8c8d"


@router.get("/decisions/{decision_id}", response_class=HTMLResponse)
def decision_page(who: CaseReader, decision_id: str, rationales: RationalesDep) -> HTMLResponse:
    actor = who.name
    document = rationales.document(decision_id, actor=actor)
    return HTMLResponse(_layout(f"Decision {decision_id}", actor, _decision(document, actor)))


@router.get("/objections", response_class=HTMLResponse)
def queue_page(
    who: CaseReader,
    desk: DeskDep,
    status: Annotated[list[Status] | None, Query()] = None,
    overdue: bool | None = None,
) -> HTMLResponse:
    actor = who.name
    now = desk.clock()
    chosen = list(status or OPEN)
    cases = [c.to_json(now) for c in desk.queue(statuses=chosen, overdue=overdue, limit=1000)]
    body = "<h1>Objections queue</h1>" + _filters(actor, chosen, overdue) + _queue(cases, actor)
    return HTMLResponse(_layout("Objections queue", actor, body))


# --- the decision page --------------------------------------------------------------------------


def _decision(doc: Mapping[str, Any], actor: str) -> str:
    customer, internal = doc["customer"], doc["internal"]
    model = internal.get("model") or {}
    summary = _pairs([
        ("Decision", doc["decision_id"]), ("Action", doc["action"]),
        ("Subject", doc["subject_type"]), ("Decided at", doc.get("decided_at")),
        ("Account", doc.get("account_id")), ("Payment", doc.get("payment_id")),
        ("Decided by", internal.get("decided_by")), ("Score", _score(internal.get("score"))),
        ("Model", f"{model.get('name')} v{model.get('version')}" if model.get("name") else None),
        ("Policy version", internal.get("policy_version")),
        ("Feature spec version", internal.get("feature_spec_version")),
        ("Rules fired", ", ".join(internal.get("rules_fired") or ()) or None),
    ])  # fmt: skip
    reasons = "".join(
        f"<li><b>{escape(r['text'])}</b> <code>{escape(r['code'])}</code></li>"
        for r in customer.get("reasons") or ()
    )
    change = customer.get("what_would_change")
    objecting = "".join(
        f"<p>{escape(str(customer[k]))}</p>" for k in ("how_to_object",) if customer.get(k)
    )
    if customer.get("object_by"):
        objecting += f"<p>Object by: <b>{escape(customer['object_by'])}</b></p>"
    return (
        f"<h1>Decision <code>{escape(doc['decision_id'])}</code>: "
        f"<span class='action'>{escape(doc['action'])}</span></h1>"
        f"<section><h2>Summary</h2><p>{escape(customer.get('summary') or '')}</p>{summary}"
        "</section>"
        "<section><h2>Reasons, as the customer reads them</h2>"
        f"<ol class='reasons'>{reasons or '<li>none</li>'}</ol>{objecting}"
        f"<p class='muted'>Data categories used: "
        f"{escape(', '.join(customer.get('data_categories') or ()) or 'none')}</p></section>"
        "<section><h2>What would have changed the outcome</h2>"
        f"<p>{escape(change['text']) if change else 'Nothing to say: see the reasons.'}</p>"
        "</section>"
        "<section><h2>Contributions (log-odds)</h2>"
        f"{_waterfall(internal, str(doc['action']))}</section>"
        f"<section><h2>Feature values against typical ones</h2>{_features(internal)}</section>"
        f"<section><h2>Objections</h2>{_cases(doc.get('objections') or (), actor)}"
        f"{_how_to_act(str(doc['decision_id']))}</section>"
    )


def _waterfall(internal: Mapping[str, Any], action: str) -> str:
    """Horizontal bars: the base value, each family's push (red towards fraud, green away),
    the rest summed, then the raw margin; a dashed line at the action's threshold."""
    base, margin = internal.get("base_value"), internal.get("raw_margin")
    families = internal.get("families") or []
    if base is None or margin is None or not families:
        return "<p class='muted'>No contributions recorded: the model did not weigh in.</p>"
    ranked = sorted(families, key=lambda f: -abs(float(f["contribution"])))
    steps = [(str(f["label"]), float(f["contribution"])) for f in ranked[:TOP_BARS]]
    rest = ranked[TOP_BARS:]
    if rest:
        steps.append((f"{len(rest)} other families", math.fsum(f["contribution"] for f in rest)))
    bars: list[tuple[str, float, float, str]] = [("base value", 0.0, float(base), NEUTRAL)]
    running = float(base)
    for label, value in steps:
        bars.append((label, running, running + value, FRAUD if value > 0 else SAFE))
        running += value
    bars.append(("raw margin", 0.0, float(margin), "#34495e"))
    limit = (internal.get("thresholds") or {}).get(action)
    line = threshold_margin(float(limit)) if limit is not None else None
    marks = [0.0, *(v for _, a, b, _ in bars for v in (a, b))]
    if line is not None and math.isfinite(line):
        marks.append(line)
    low, high = min(marks), max(marks)
    span = (high - low) or 1.0
    left, width, row = 300, 480, 26
    height = row * len(bars) + 30

    def x(value: float) -> float:
        return left + (value - low) / span * width

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='waterfall' width='{left + width + 90}' "
        f"height='{height}' role='img' aria-label='contributions waterfall'>",
        f"<line x1='{x(0):.1f}' y1='0' x2='{x(0):.1f}' y2='{height - 20}' stroke='#999'/>",
    ]
    for i, (label, start, end, colour) in enumerate(bars):
        y = i * row + 4
        x0, x1 = sorted((x(start), x(end)))
        delta = end - start if 0 < i < len(bars) - 1 else end
        parts.append(
            f"<text x='{left - 8}' y='{y + 15}' text-anchor='end'>{escape(label)}</text>"
            f"<rect x='{x0:.1f}' y='{y}' width='{max(x1 - x0, 1.0):.1f}' height='{row - 8}' "
            f"fill='{colour}'><title>{escape(label)}: {delta:+.3f}</title></rect>"
            f"<text x='{x1 + 4:.1f}' y='{y + 15}' class='value'>{delta:+.3f}</text>"
        )
        if 0 < i < len(bars) - 1:  # the connector from the previous bar's end
            parts.append(
                f"<line x1='{x(start):.1f}' y1='{y - 8}' x2='{x(start):.1f}' y2='{y}' "
                "stroke='#555' stroke-dasharray='2,2'/>"
            )
    if line is not None and math.isfinite(line):
        anchor = "end" if x(line) > left + width / 2 else "start"
        parts.append(
            f"<line x1='{x(line):.1f}' y1='0' x2='{x(line):.1f}' y2='{height - 20}' "
            f"stroke='#000' stroke-dasharray='6,4'/><text x='{x(line):.1f}' y='{height - 6}' "
            f"text-anchor='{anchor}'>{escape(action)} threshold ({line:+.2f})</text>"
        )
    parts.append("</svg>")
    check = internal.get("check")
    note = (
        f"<p class='muted'>Base value plus contributions: {check['base_plus_sum']:+.4f}; "
        f"recorded raw margin: {check['raw_margin']:+.4f}.</p>"
        if check
        else ""
    )
    return "".join(parts) + note


def _features(internal: Mapping[str, Any]) -> str:
    rows = [
        [f["label"], feature["name"], _value(feature["value"]), _value(feature["typical"]),
         _num(feature["contribution"])]
        for f in internal.get("families") or ()
        for feature in f["features"]
    ]  # fmt: skip
    if not rows:
        return "<p class='muted'>No feature contributions recorded.</p>"
    return _table(["Family", "Feature", "Value", "Typical", "Contribution"], rows)


def _cases(cases: Iterable[Mapping[str, Any]], actor: str) -> str:
    parts = []
    for case in cases:
        late = " <span class='overdue'>OVERDUE</span>" if case.get("overdue") else ""
        details = _pairs([
            ("Case", case["objection_id"]), ("Jurisdiction", case["jurisdiction"]),
            ("Channel", case["channel"]), ("Opened by", case["opened_by"]),
            ("Received", case["received_at"]), ("Acknowledge by", case["acknowledge_by"]),
            ("Deadline", case["deadline"]), ("Extension", case.get("extension_reason")),
            ("Outcome", case.get("outcome")), ("New action", case.get("new_action")),
            ("Decided by", case.get("decided_by")),
            ("Reviewer's rationale", case.get("review_rationale")),
            ("Statement", case["statement"]),
        ])  # fmt: skip
        events = _table(
            ["At", "Actor", "Action", "From", "To", "Note", "Deadline after"],
            [[e["at"], e["actor"], e["action"], e["from_status"], e["to_status"], e["note"],
              e["deadline"]] for e in case.get("events") or ()],
        )  # fmt: skip
        parts.append(
            f"<div class='case'><h3>Status: <span class='status'>{escape(case['status'])}"
            f"</span>{late}</h3>{details}<h4>History</h4>{events}</div>"
        )
    queue = "/ui/objections"
    listed = "".join(parts) or "<p class='muted'>No objection to this decision.</p>"
    return f"{listed}<p><a href='{escape(queue)}'>The objections queue</a></p>"


def _how_to_act(decision_id: str) -> str:
    url = f"/v1/decisions/{quote(decision_id)}/objections"
    return (
        "<details><summary>How to act</summary><p>These pages only show. Open an objection "
        "or move a case on through the API with your own key "
        "(docs/objections.md):</p><pre>"
        + escape(
            f"curl -X POST $ARBITER{url} -H 'Authorization: Bearer KEY' "
            "-H 'Content-Type: application/json' \\\n"
            '  -d \'{"statement": "...", "channel": "email", "jurisdiction": "GDPR"}\'\n'
            "curl -X POST $ARBITER/v1/objections/CASE/transitions "
            "-H 'Authorization: Bearer KEY' "
            "-H 'Content-Type: application/json' \\\n"
            '  -d \'{"action": "acknowledge", "note": "..."}\''
        )
        + "</pre></details>"
    )


# --- the queue page -----------------------------------------------------------------------------


def _filters(actor: str, chosen: Sequence[str], overdue: bool | None) -> str:
    boxes = "".join(
        f"<label><input type='checkbox' name='status' value='{s}'"
        f"{' checked' if s in chosen else ''}> {s}</label> "
        for s in STATUSES
    )
    late = " checked" if overdue else ""
    return (
        "<form method='get' class='filters'>"
        f"{boxes}"
        f"<label><input type='checkbox' name='overdue' value='true'{late}> overdue only</label> "
        "<button type='submit'>Filter</button></form>"
    )


def _queue(cases: Sequence[Mapping[str, Any]], actor: str) -> str:
    if not cases:
        return "<p class='muted'>No case matches.</p>"
    rows = []
    for case in cases:
        link = f"/ui/decisions/{quote(case['decision_id'])}"
        late = "<span class='overdue'>OVERDUE</span>" if case["overdue"] else "no"
        rows.append(
            f"<tr class='{'late' if case['overdue'] else ''}'>"
            f"<td><code>{escape(case['objection_id'][:8])}</code></td>"
            f"<td class='status'>{escape(case['status'])}</td>"
            f"<td>{escape(case['jurisdiction'])}</td><td>{escape(case['channel'])}</td>"
            f"<td class='ts'>{_minute(case['received_at'])}</td>"
            f"<td class='ts'>{_minute(case['acknowledge_by'])}</td>"
            f"<td class='ts'>{_minute(case['deadline'])}</td><td>{late}</td>"
            f"<td><a href='{escape(link)}'>{escape(case['decision_id'])}</a></td>"
            f"<td>{escape(case['account_id'])}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Case", "Status", "Jurisdiction", "Channel", "Received", "Acknowledge by",
                  "Deadline", "Overdue", "Decision", "Account")
    )  # fmt: skip
    return (
        f"<p>{len(cases)} case{'s' if len(cases) > 1 else ''}, nearest deadline first.</p>"
        f"<table><tr>{head}</tr>" + "".join(rows) + "</table>"
    )


# --- pieces -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 20px 40px;
color:#222}
header{display:flex;justify-content:space-between;border-bottom:2px solid #34495e;
padding:10px 0;margin-bottom:10px}
header a{color:#34495e;font-weight:600;text-decoration:none}
h1{font-size:20px}h2{font-size:16px;border-bottom:1px solid #ddd;padding-bottom:3px}
section{margin:18px 0}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f5f7}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px}
dt{color:#666}dd{margin:0}.muted{color:#777}.action{color:#c0392b}
.overdue{background:#c0392b;color:#fff;padding:1px 6px;border-radius:3px;font-size:12px}
tr.late td{background:#fdecea}.case{border:1px solid #ccc;border-radius:4px;padding:4px 12px;
margin:10px 0}.status{font-family:monospace}svg.waterfall text{font-size:12px}
svg.waterfall text.value{fill:#444}td.ts{white-space:nowrap}.filters label{margin-right:6px}
pre{background:#f5f5f5;padding:8px;overflow-x:auto}
"""


def _layout(title: str, actor: str, body: str) -> str:
    queue = "/ui/objections"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - Arbiter</title><style>{_CSS}</style></head><body>"
        f"<header><a href='{escape(queue)}'>Arbiter: objections queue</a>"
        f"<span class='muted'>reading as {escape(actor)}</span></header>{body}</body></html>"
    )


def _pairs(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items if v is not None
    )
    return f"<dl>{rows}</dl>"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{header}</tr>{body}</table>"


def _num(value: Any) -> str | None:
    return None if value is None else f"{float(value):+.4f}"


def _minute(ts: str) -> str:
    """`2026-11-29T11:52:20.224Z` as `2026-11-29 11:52Z`: the queue's columns stay narrow."""
    return escape(f"{ts[:10]} {ts[11:16]}Z")


def _score(value: Any) -> str | None:
    return None if value is None else f"{float(value):.4f}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


# --- signing in ---------------------------------------------------------------------------------

_LOGIN = (
    "<h1>Sign in</h1><p>Paste your API key (support, reviewer or privacy role). It is kept in a "
    "cookie of this site only, for these pages.</p>{error}<form method='post' action='/ui/login'>"
    "<input type='password' name='key' size='70' autocomplete='off'> <button>Sign in</button>"
    "</form>"
)


@router.get("/login", response_class=HTMLResponse)
def login_page() -> HTMLResponse:
    return HTMLResponse(_layout("Sign in", "nobody", _LOGIN.format(error="")))


@router.post("/login", response_class=HTMLResponse, response_model=None)
async def login(request: Request, runtime: RuntimeDep) -> HTMLResponse | RedirectResponse:
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("sign in from this site's own page")  # no cross-site sign-in
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    principal = await authenticate(runtime.keys, key) if runtime.keys is not None else None
    if principal is None or principal.roles.isdisjoint(PAGE_ROLES):
        why = "unknown or revoked" if principal is None else "not one for these pages"
        error = f"<p class='overdue'>That key is {why} (support, reviewer or privacy).</p>"
        return HTMLResponse(_layout("Sign in", "nobody", _LOGIN.format(error=error)), 401)
    response = RedirectResponse("/ui/objections", status_code=303)
    loopback = request.url.hostname in ("127.0.0.1", "localhost", "::1")
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/ui",
                        secure=not loopback)  # fmt: skip
    return response

"""The console's words in English and French, and the number and date typography of each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Final, Literal

Lang = Literal["en", "fr"]
LANGS: Final[tuple[Lang, ...]] = ("en", "fr")

# key -> (English, French)
_TEXT: Final[dict[str, tuple[str, str]]] = {
    "app_name": ("b2bscore console", "Console b2bscore"),
    "skip": ("Skip to content", "Aller au contenu"),
    "nav_score": ("Score", "Scorer"),
    "nav_decisions": ("Decisions", "Décisions"),
    "nav_operations": ("Operations", "Exploitation"),
    "nav_models": ("Models", "Modèles"),
    "nav_webhooks": ("Webhooks", "Webhooks"),
    "nav_consents": ("Consents", "Consentements"),
    "nav_monitoring": ("Monitoring", "Surveillance"),
    "nav_label": ("Console sections", "Sections de la console"),
    "language": ("Language", "Langue"),
    "sign_in": ("Sign in", "Se connecter"),
    "sign_out": ("Sign out", "Se déconnecter"),
    "signed_out": ("You are signed out.", "Vous êtes déconnecté."),
    "sign_in_title": ("Sign in to the console", "Connexion à la console"),
    "sign_in_intro": (
        "Sign in with an API key of your tenant. The key is checked once and exchanged "
        "for a session; it is not kept in this page nor in a cookie.",
        "Connectez-vous avec une clé d'API de votre locataire. La clé est vérifiée une fois "
        "puis échangée contre une session ; elle n'est gardée ni dans la page ni dans un cookie.",
    ),
    "api_key": ("API key", "Clé d'API"),
    "api_key_hint": ("sk_test_… or sk_live_…", "sk_test_… ou sk_live_…"),
    "bad_key": (
        "This API key is invalid, revoked or expired.",
        "Cette clé d'API est invalide, révoquée ou expirée.",
    ),
    "session_expired": (
        "Your session has ended. Sign in again.",
        "Votre session a pris fin. Reconnectez-vous.",
    ),
    "csrf_failed": (
        "This form expired or did not come from this console. Please try again.",
        "Ce formulaire a expiré ou ne provient pas de cette console. Veuillez réessayer.",
    ),
    "test_mode": ("Test mode", "Mode test"),
    "test_banner": (
        "sandbox companies and data only; decisions made here are not real credit decisions.",
        "entreprises et données du bac à sable uniquement ; ces décisions ne sont pas réelles.",
    ),
    "live_mode": ("Live", "Production"),
    "tenant": ("Tenant", "Locataire"),
    "key": ("Key", "Clé"),
    # scoring
    "score_title": ("Score a company", "Scorer une entreprise"),
    "siren": ("SIREN", "SIREN"),
    "siren_hint": ("9 digits, spaces allowed", "9 chiffres, espaces acceptés"),
    "amount": ("Amount", "Montant"),
    "amount_hint": ("EUR, e.g. 25000.00", "EUR, par ex. 25000.00"),
    "product": ("Product", "Produit"),
    "score_button": ("Score", "Scorer"),
    "scoring": ("Scoring…", "Calcul en cours…"),
    "form_errors": (
        "The request was not sent: correct the fields marked below.",
        "La demande n'a pas été envoyée : corrigez les champs signalés ci-dessous.",
    ),
    "result": ("Result", "Résultat"),
    "decision": ("Decision", "Décision"),
    "score": ("Score", "Score"),
    "score_scale": ("out of 1000, higher is safer", "sur 1000, plus haut est plus sûr"),
    "grade": ("Grade", "Note"),
    "pd": ("Probability of default (12 months)", "Probabilité de défaut (12 mois)"),
    "pd_short": ("PD", "PD"),
    "limit": ("Proposed limit", "Limite proposée"),
    "requested": ("Requested amount", "Montant demandé"),
    "reasons": ("Reasons", "Motifs"),
    "reasons_intro": (
        "Each reason's contribution to the risk (log-odds of default). Bars to the right "
        "(+, hatched) raise the risk; bars to the left (−, solid) lower it.",
        "Contribution de chaque motif au risque (log-odds de défaut). Les barres à droite "
        "(+, hachurées) augmentent le risque ; à gauche (−, pleines) elles le diminuent.",
    ),
    "raises_risk": ("raises risk", "augmente le risque"),
    "lowers_risk": ("lowers risk", "diminue le risque"),
    "reason_code": ("Code", "Code"),
    "contribution": ("Contribution", "Contribution"),
    "effect": ("Effect", "Effet"),
    "no_reasons": ("No reasons recorded.", "Aucun motif enregistré."),
    "sources": ("Sources", "Sources"),
    "source": ("Source", "Source"),
    "status": ("Status", "Statut"),
    "data_as_of": ("Data as of", "Données au"),
    "age": ("Age", "Ancienneté"),
    "latency": ("Latency", "Latence"),
    "detail": ("Detail", "Détail"),
    "degraded_title": ("Degraded answer", "Réponse dégradée"),
    "degraded_note": (
        "Some data was missing when this decision was made; it was scored without it. "
        "Sources not available:",
        "Certaines données manquaient lors de cette décision ; elle a été scorée sans elles. "
        "Sources indisponibles :",
    ),
    "complete_data": ("All sources answered.", "Toutes les sources ont répondu."),
    "open_decision": ("Open the audit record", "Ouvrir l'enregistrement d'audit"),
    "score_failed": ("No decision was issued", "Aucune décision n'a été émise"),
    # decisions
    "decisions_title": ("Decisions", "Décisions"),
    "filters": ("Filters", "Filtres"),
    "date_from": ("From (UTC)", "Du (UTC)"),
    "date_to": ("To (UTC, inclusive)", "Au (UTC, inclus)"),
    "any": ("Any", "Toutes"),
    "apply": ("Apply filters", "Filtrer"),
    "reset": ("Reset", "Réinitialiser"),
    "created": ("Created (UTC)", "Créée (UTC)"),
    "no_decisions": ("No decision matches these filters.", "Aucune décision ne correspond."),
    "newer_first": ("Newest first", "Plus récentes d'abord"),
    "next_page": ("Older decisions", "Décisions plus anciennes"),
    "first_page": ("Back to the newest", "Revenir aux plus récentes"),
    "pagination": ("Pagination", "Pagination"),
    "open": ("Open", "Ouvrir"),
    "from_after_to": ("must not be after the end date", "ne doit pas être après la date de fin"),
    "bad_date": ("must be a date (YYYY-MM-DD)", "doit être une date (AAAA-MM-JJ)"),
    # one decision
    "decision_title": ("Decision", "Décision"),
    "decision_id": ("Decision id", "Identifiant"),
    "mode": ("Mode", "Mode"),
    "model": ("Model", "Modèle"),
    "request": ("Request", "Demande"),
    "features": ("Features", "Variables"),
    "feature": ("Feature", "Variable"),
    "value": ("Value", "Valeur"),
    "unit": ("Unit", "Unité"),
    "description": ("Description", "Description"),
    "missing": ("missing", "manquante"),
    "integrity": ("Integrity of the audit chain", "Intégrité de la chaîne d'audit"),
    "seq": ("Position in chain", "Position dans la chaîne"),
    "prev_hash": ("Previous hash", "Empreinte précédente"),
    "row_hash": ("Row hash", "Empreinte de la ligne"),
    "hash_ok": (
        "Verified: the row's content hashes to its recorded hash.",
        "Vérifiée : le contenu de la ligne correspond à son empreinte.",
    ),
    "hash_bad": (
        "Tampered: the row's content does not match its recorded hash.",
        "Altérée : le contenu de la ligne ne correspond pas à son empreinte.",
    ),
    "link_ok": (
        "Linked: the previous row's hash matches.",
        "Chaînée : l'empreinte de la ligne précédente correspond.",
    ),
    "link_bad": (
        "Broken link: the previous row's hash does not match.",
        "Chaîne rompue : l'empreinte de la ligne précédente ne correspond pas.",
    ),
    "link_genesis": (
        "First row of the chain (links to the genesis hash).",
        "Première ligne de la chaîne (liée à l'empreinte d'origine).",
    ),
    "request_hash": ("Request hash", "Empreinte de la demande"),
    "idempotency_key": ("Idempotency key", "Clé d'idempotence"),
    "api_key_id": ("API key id", "Identifiant de la clé d'API"),
    "payloads": ("Provider payloads", "Réponses des fournisseurs"),
    "payloads_stored": ("stored, encrypted (AES-256-GCM)", "conservées, chiffrées (AES-256-GCM)"),
    "payloads_purged": ("purged after retention", "purgées après la durée de conservation"),
    "data_key": ("data key", "clé de données"),
    "replay": ("Replay this decision", "Rejouer cette décision"),
    "replay_intro": (
        "Recomputes the decision from its stored features with the model version that made "
        "it, and lists any difference.",
        "Recalcule la décision à partir des variables enregistrées avec la version du modèle "
        "qui l'a prise, et liste les écarts.",
    ),
    "replay_identical": (
        "Identical: the stored model, fed the stored features, decides as recorded.",
        "Identique : le modèle enregistré, avec les variables enregistrées, décide comme "
        "enregistré.",
    ),
    "replay_different": (
        "Different: the replay does not match the record.",
        "Différente : le rejeu ne correspond pas à l'enregistrement.",
    ),
    "replay_unavailable": ("Replay not possible", "Rejeu impossible"),
    "field": ("Field", "Champ"),
    "recorded": ("Recorded", "Enregistré"),
    "replayed": ("Replayed", "Rejoué"),
    "not_found": ("Decision not found.", "Décision introuvable."),
    "back_to_list": ("Back to decisions", "Retour aux décisions"),
    # models
    "models_title": ("Models", "Modèles"),
    "bundles": ("Bundles", "Paquets de modèle"),
    "model_id": ("Model id", "Identifiant"),
    "version": ("Version", "Version"),
    "trained_at": ("Trained at", "Entraîné le"),
    "roles": ("Roles", "Rôles"),
    "role_live": ("live", "production"),
    "role_shadow": ("shadow", "ombre"),
    "role_canary": ("canary", "canari"),
    "drift_title": ("Drift of the serving model", "Dérive du modèle servi"),
    "drift_n": ("{n} decisions in the window.", "{n} décisions sur la période."),
    "drift_unavailable": ("Drift unavailable:", "Dérive indisponible :"),
    "psi_legend": (
        "Population stability index against the training reference: "
        "watch from {watch}, act from {act}.",
        "Indice de stabilité de population par rapport à la référence d'entraînement : "
        "surveiller dès {watch}, agir dès {act}.",
    ),
    "psi_watch": ("watch", "surveiller"),
    "psi_act": ("act", "agir"),
    "variable": ("Variable", "Variable"),
    "no_bundles": (
        "No bundle in the models directory.",
        "Aucun paquet dans le répertoire des modèles.",
    ),
    # webhooks
    "webhooks_title": ("Webhook endpoints", "Points de terminaison webhook"),
    "event_types": ("Event types", "Types d'événement"),
    "created_at": ("Created", "Créé le"),
    "endpoint_enabled": ("enabled", "actif"),
    "endpoint_disabled": ("disabled", "désactivé"),
    "no_endpoints": (
        "No webhook endpoint in this mode.",
        "Aucun point de terminaison dans ce mode.",
    ),
    "back_to_webhooks": ("Back to webhook endpoints", "Retour aux points de terminaison"),
    "deliveries": ("Recent deliveries", "Livraisons récentes"),
    "event": ("Event", "Événement"),
    "attempts": ("Attempts", "Tentatives"),
    "attempted_at": ("Last attempt", "Dernière tentative"),
    "actions": ("Actions", "Actions"),
    "delivery_pending": ("pending", "en attente"),
    "delivery_succeeded": ("delivered", "livrée"),
    "delivery_failed": ("failed", "échouée"),
    "no_deliveries": ("No delivery yet.", "Aucune livraison pour l'instant."),
    "redeliver": ("Redeliver", "Relivrer"),
    "redelivery_queued": (
        "The delivery is queued for a new round of attempts.",
        "La livraison est remise en file pour une nouvelle série de tentatives.",
    ),
    "not_found_generic": ("Not found.", "Introuvable."),
    # consents
    "consents_title": ("Open-banking consents", "Consentements open banking"),
    "bank": ("Bank", "Banque"),
    "scopes": ("Scopes", "Périmètres"),
    "expires_at": ("Expires", "Expire le"),
    "last_synced_at": ("Last synced", "Dernière synchronisation"),
    "consent_pending": ("pending", "en attente"),
    "consent_active": ("active", "actif"),
    "consent_revoked": ("revoked", "révoqué"),
    "consent_refused": ("refused", "refusé"),
    "consent_expired": ("expired", "expiré"),
    "no_consents": ("No consent in this mode.", "Aucun consentement dans ce mode."),
    "revoke": ("Revoke", "Révoquer"),
    "consent_revoked_notice": (
        "The consent is revoked; its tokens and bank data are purged.",
        "Le consentement est révoqué ; ses jetons et données bancaires sont purgés.",
    ),
    # monitoring
    "monitoring_title": ("Monitored companies", "Entreprises surveillées"),
    "external_reference": ("Your reference", "Votre référence"),
    "last_checked_at": ("Last checked", "Dernier contrôle"),
    "no_monitored": (
        "No monitored company in this mode.",
        "Aucune entreprise surveillée dans ce mode.",
    ),
    "monitored_company": ("Monitored company", "Entreprise surveillée"),
    "back_to_monitoring": ("Back to monitored companies", "Retour aux entreprises surveillées"),
    "last_decision": ("Decision of the last check", "Décision du dernier contrôle"),
    "alerts": ("Alerts", "Alertes"),
    "alerts_intro": (
        "The newest {n} alerts of each company, in this mode.",
        "Les {n} alertes les plus récentes de chaque entreprise, dans ce mode.",
    ),
    "alerts_company_intro": (
        "The company's newest {n} alerts in this mode, as sent to your webhooks.",
        "Les {n} alertes les plus récentes de l'entreprise dans ce mode, "
        "telles qu'envoyées à vos webhooks.",
    ),
    "no_alerts": ("No alert yet.", "Aucune alerte pour l'instant."),
    "alert_company_score_changed": ("Score changed", "Score modifié"),
    "alert_company_proceedings_opened": ("Proceedings opened", "Procédure collective ouverte"),
    "alert_company_closed": ("Company closed", "Entreprise fermée"),
    "trigger_grade_drop": ("grade dropped", "note en baisse"),
    "trigger_grade_rise": ("grade rose", "note en hausse"),
    "trigger_band_crossing": ("score band crossed", "seuil de score franchi"),
    "closed_detected": (
        "The registry shows the company as closed.",
        "Le registre indique que l'entreprise est fermée.",
    ),
    # the model, as one tenant sees it
    "nav_model": ("Your model", "Votre modèle"),
    "model_title": ("Model and drift", "Modèle et dérive"),
    "models_serving": ("Models serving your requests", "Modèles qui traitent vos requêtes"),
    "none": ("none", "aucun"),
    "canary_all_yours": (
        "decides all of your requests",
        "décide toutes vos requêtes",
    ),
    "canary_share": (
        "decides for {n}% of companies",
        "décide pour {n} % des entreprises",
    ),
    "shadow_explained": (
        "A shadow model scores your decisions after the fact; it never changes an answer.",
        "Le modèle ombre score vos décisions après coup ; il ne change jamais une réponse.",
    ),
    "your_decisions": ("Your decisions", "Vos décisions"),
    "tenant_model_scope": (
        "Only your decisions in this mode.",
        "Uniquement vos décisions dans ce mode.",
    ),
    "shadow_agreement": (
        "The shadow model agreed on {share} of {n} of your decisions.",
        "Le modèle ombre a été d'accord sur {share} de {n} de vos décisions.",
    ),
    "tenant_drift_title": (
        "Your scores against the training reference",
        "Vos scores face à la référence d'entraînement",
    ),
    "score_psi": ("Score PSI:", "PSI du score :"),
    "training_reference": ("Training reference", "Référence d'entraînement"),
    # operations
    "operations_title": ("Operations", "Exploitation"),
    "window": ("Window", "Période"),
    "window_1h": ("Last hour", "Dernière heure"),
    "window_24h": ("Last 24 hours", "Dernières 24 heures"),
    "window_7d": ("Last 7 days", "7 derniers jours"),
    "window_30d": ("Last 30 days", "30 derniers jours"),
    "show": ("Show", "Afficher"),
    "ops_scope": (
        "From the audit store, for this tenant and mode.",
        "Depuis le registre d'audit, pour ce locataire et ce mode.",
    ),
    "decisions_count": ("Decisions", "Décisions"),
    "degraded_count": ("Degraded answers", "Réponses dégradées"),
    "latency_title": ("Server-side latency (ms)", "Latence côté serveur (ms)"),
    "budget": ("budget", "budget"),
    "outcomes_title": ("Decisions by outcome", "Décisions par issue"),
    "scores_title": ("Score distribution", "Distribution des scores"),
    "no_data": ("No decisions in this window.", "Aucune décision sur cette période."),
    "sampled": (
        "Computed on the most recent {n} decisions of the window.",
        "Calculé sur les {n} décisions les plus récentes de la période.",
    ),
    "count": ("Count", "Nombre"),
    # problems of the scoring service, by code (the detail stays the API's own words)
    "problem_rate_limited": ("Too many requests", "Trop de requêtes"),
    "problem_audit_unavailable": (
        "Decision not issued: the audit store did not answer",
        "Décision non émise : le registre d'audit n'a pas répondu",
    ),
    "problem_idempotency_key_reused": (
        "This form was already used for another request",
        "Ce formulaire a déjà servi pour une autre demande",
    ),
    "problem_idempotency_conflict": (
        "The same request is already being decided",
        "La même demande est déjà en cours de décision",
    ),
    # errors
    "forbidden": (
        "This key lacks the '{scope}' scope needed here.",
        "Cette clé n'a pas la portée « {scope} » nécessaire ici.",
    ),
    "error_title": ("Something went wrong", "Une erreur est survenue"),
    "page_not_found": ("Page not found.", "Page introuvable."),
}

_DECISIONS: Final[dict[str, tuple[str, str]]] = {
    "approve": ("Approve", "Accepter"),
    "review": ("Review", "À examiner"),
    "decline": ("Decline", "Refuser"),
}
_PRODUCTS: Final[dict[str, tuple[str, str]]] = {
    "term_loan": ("Term loan", "Prêt amortissable"),
    "credit_line": ("Credit line", "Ligne de crédit"),
    "invoice_financing": ("Invoice financing", "Financement de factures"),
    "bnpl": ("Buy now, pay later", "Paiement différé (BNPL)"),
}
_SOURCES: Final[dict[str, tuple[str, str]]] = {
    "open_banking": ("Open banking", "Banque ouverte (DSP2)"),
    "accounting": ("Accounting", "Comptabilité"),
    "registry": ("Company registry", "Registre des entreprises"),
}
_STATUSES: Final[dict[str, tuple[str, str]]] = {
    "ok": ("OK", "OK"),
    "cached": ("Cached", "En cache"),
    "timeout": ("Timed out", "Délai dépassé"),
    "error": ("Error", "Erreur"),
    "unavailable": ("Unavailable", "Indisponible"),
}


def _pick(table: dict[str, tuple[str, str]], key: str, lang: Lang) -> str:
    pair = table.get(key)
    if pair is None:
        return key
    return pair[0] if lang == "en" else pair[1]


def translator(lang: Lang) -> Callable[..., str]:
    """t(key, **values): the text of key in lang, formatted with values."""

    def t(key: str, **values: object) -> str:
        text = _pick(_TEXT, key, lang)
        return text.format(**values) if values else text

    return t


def has_text(key: str) -> bool:
    """True when key has a translation."""
    return key in _TEXT


def decision_word(decision: str, lang: Lang) -> str:
    """approve/review/decline in words."""
    return _pick(_DECISIONS, decision, lang)


def product_word(product: str, lang: Lang) -> str:
    """A product code in words."""
    return _pick(_PRODUCTS, product, lang)


def source_word(source: str, lang: Lang) -> str:
    """A source name in words."""
    return _pick(_SOURCES, source, lang)


def status_word(status: str, lang: Lang) -> str:
    """A source status in words."""
    return _pick(_STATUSES, status, lang)


def _group(integral: str, separator: str) -> str:
    digits = integral.lstrip("-")
    groups: list[str] = []
    while len(digits) > 3:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    groups.insert(0, digits)
    return ("-" if integral.startswith("-") else "") + separator.join(groups)


def money(value: Decimal | str | None, lang: Lang) -> str:
    """EUR with the locale's grouping: €25,000.00 / 25 000,00 €."""
    if value is None:
        return "—"
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    integral, _, cents = f"{amount:f}".partition(".")
    if lang == "fr":
        return _group(integral, "\u202f") + "," + cents + "\u00a0€"
    return f"€{_group(integral, ',')}.{cents}"


def number(value: float | int | None, lang: Lang, digits: int = 2) -> str:
    """A number with the locale's decimal mark; — when missing."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def percent(value: float | None, lang: Lang, digits: int = 2) -> str:
    """A probability as a percentage: 0.0123 -> 1.23 % / 1,23 %."""
    if value is None:
        return "—"
    text = number(value * 100, lang, digits)
    return f"{text}\u202f%" if lang == "fr" else f"{text}%"


def timestamp(value: datetime, lang: Lang) -> str:
    """A UTC timestamp to the second."""
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def age(as_of: date | None, today: date, lang: Lang) -> str:
    """How old a source's data was: today, 1 day, n days."""
    if as_of is None:
        return "—"
    days = (today - as_of).days
    if days <= 0:
        return "today" if lang == "en" else "aujourd'hui"
    if days == 1:
        return "1 day" if lang == "en" else "1 jour"
    return f"{days} days" if lang == "en" else f"{days} jours"

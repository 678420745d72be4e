"""All models, imported here so Alembic and the app see one metadata."""

from crm.models.api import API_SCOPES, ApiKey
from crm.models.base import Base, utcnow
from crm.models.campaigns import (
    CAMPAIGN_STATUSES,
    EDITABLE_STATUSES,
    ENGAGEMENT_KINDS,
    MESSAGE_STATUSES,
    Campaign,
    CampaignLink,
    EmailTemplate,
    EngagementEvent,
    Message,
    SenderIdentity,
)
from crm.models.feedback import (
    FEEDBACK_KINDS,
    FEEDBACK_OUTCOMES,
    PROVIDERS,
    FeedbackEvent,
    FeedbackIntake,
    FeedbackProvider,
    FeedbackRules,
)
from crm.models.imports import IMPORT_STATUSES, ImportJob
from crm.models.outbound import (
    DELIVERY_STATUSES,
    WEBHOOK_EVENTS,
    OutboundEvent,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSettings,
)
from crm.models.petitions import (
    CONSENT_MODES,
    PETITION_STATUSES,
    ConsentWording,
    Petition,
    Signature,
    SignatureConfirmation,
)
from crm.models.reports import (
    EXPORT_STATUSES,
    CampaignBreakdownRollup,
    CampaignHourRollup,
    CampaignLinkRollup,
    CampaignRollup,
    ConsentSourceRollup,
    DailyRollup,
    ExportJob,
    PetitionDayRollup,
    PetitionRollup,
    PetitionSourceRollup,
    RollupState,
)
from crm.models.segments import Segment
from crm.models.settings import OrgSettings
from crm.models.staff import ROLES, AuditLog, StaffUser
from crm.models.supporters import (
    CONSENT_ACTIONS,
    EMAIL_STATUSES,
    STATUS_AFTER,
    SUPPRESSION_REASONS,
    ConsentEvent,
    Supporter,
    Suppression,
    Tag,
    supporter_tag,
)
from crm.models.variants import AB_METRICS, AB_STATUSES, AbTest, CampaignVariant

__all__ = [
    "Base", "utcnow", "CONSENT_MODES", "PETITION_STATUSES", "Petition", "Signature", "SignatureConfirmation", "ROLES",
    "AuditLog", "StaffUser", "CONSENT_ACTIONS", "EMAIL_STATUSES", "STATUS_AFTER",
    "ConsentEvent", "Supporter", "Tag", "supporter_tag", "ConsentWording", "Suppression",
    "IMPORT_STATUSES", "ImportJob", "Segment", "CAMPAIGN_STATUSES", "EDITABLE_STATUSES",
    "ENGAGEMENT_KINDS", "MESSAGE_STATUSES", "Campaign", "CampaignLink", "EmailTemplate", "EngagementEvent", "Message",
    "SenderIdentity", "OrgSettings", "FEEDBACK_KINDS", "FEEDBACK_OUTCOMES", "PROVIDERS", "FeedbackEvent",
    "FeedbackIntake", "FeedbackProvider", "FeedbackRules", "SUPPRESSION_REASONS", "EXPORT_STATUSES",
    "CampaignBreakdownRollup",
    "CampaignHourRollup", "CampaignLinkRollup", "CampaignRollup", "DailyRollup", "ExportJob", "PetitionDayRollup",
    "PetitionSourceRollup", "PetitionRollup", "ConsentSourceRollup", "RollupState",
    "AB_METRICS", "AB_STATUSES", "AbTest", "CampaignVariant",
    "API_SCOPES", "ApiKey", "DELIVERY_STATUSES",
    "WEBHOOK_EVENTS", "OutboundEvent", "WebhookDelivery", "WebhookEndpoint", "WebhookSettings",
]

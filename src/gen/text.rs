//! The words the generator puts in tickets and survey comments.
//!
//! Each [`Topic`] is written to hit one leaf of the default taxonomy (`config/taxonomy.toml`): its
//! subjects, problem sentences, follow-up comments and resolutions carry that tag's keywords and phrases,
//! and its `product_area` is a value the tag's field rule lists. The generic sentences (greetings,
//! context, closers, small talk, praise) are written to match no rule at all, so that the texts that say
//! nothing specific really come out `uncategorized`. Keep both properties when editing: the tagger's
//! tests and the demo data rely on them.

/// One issue topic: the texts a customer writes about it, and where in the product it lives.
pub(crate) struct Topic {
    /// The taxonomy tag these texts are written to hit.
    pub tag: &'static str,
    /// How often the topic comes up, relative to the others.
    pub weight: u32,
    /// The ticket's `product_area`, one of the values the tag's field rule lists.
    pub product_area: &'static str,
    /// The journey stage a customer would file it under, when the ticket names one.
    pub journey_stage: &'static str,
    /// Outages, breaches and data loss: far more often high or urgent.
    pub severe: bool,
    pub subjects: &'static [&'static str],
    /// One or two of these make the core of a ticket body.
    pub problems: &'static [&'static str],
    /// Survey comments and ticket follow-ups.
    pub comments: &'static [&'static str],
    pub resolutions: &'static [&'static str],
}

pub(crate) const TOPICS: &[Topic] = &[
    // ------------------------------------------------------------------------------------ onboarding
    Topic {
        tag: "onboarding.setup",
        weight: 4,
        product_area: "onboarding",
        journey_stage: "onboarding",
        severe: false,
        subjects: &[
            "Setup wizard stuck on step three",
            "Need a hand with the initial setup",
            "Configuring our workspace",
        ],
        problems: &[
            "We are still setting up our workspace and the setup wizard will not let us continue past step three.",
            "Our admin is configuring the account for the first time and is unsure which options to pick.",
            "Could someone walk us through the initial setup before our kickoff next week?",
        ],
        comments: &[
            "Initial setup took longer than it should have.",
            "Getting started was harder than expected, the setup wizard skips important steps.",
        ],
        resolutions: &[
            "Walked the admin through the initial setup on a call.",
            "Corrected the workspace configuration and finished the setup together.",
        ],
    },
    Topic {
        tag: "onboarding.data-import",
        weight: 2,
        product_area: "onboarding",
        journey_stage: "onboarding",
        severe: false,
        subjects: &["Migrating from our old tool", "Data migration plan", "Historical data missing after migration"],
        problems: &[
            "We are migrating from our previous vendor and need to bring over five years of historical data.",
            "The data migration skipped every record created before 2023.",
            "What is the best way to migrate our contacts and their history from the old system?",
        ],
        comments: &[
            "The data migration was painful and took weeks.",
            "Migrating our historical data needed far more manual work than promised.",
        ],
        resolutions: &[
            "Re-ran the data migration with the older records included.",
            "Shared the migration checklist and scheduled the import of the historical data.",
        ],
    },
    Topic {
        tag: "onboarding.training",
        weight: 3,
        product_area: "onboarding",
        journey_stage: "onboarding",
        severe: false,
        subjects: &["Training for new users", "Documentation is outdated", "Request for a training session"],
        problems: &[
            "Can we book a training session for our new team members next month?",
            "The documentation is outdated, the screenshots in the user guide no longer match the product.",
            "Is there a tutorial or webinar for admins who are new to the product?",
        ],
        comments: &[
            "More training for admins would make a big difference.",
            "The docs are outdated and the knowledge base is hard to search.",
        ],
        resolutions: &[
            "Booked a training session for the new users.",
            "Shared the updated user guide and the webinar recordings.",
        ],
    },
    Topic {
        tag: "onboarding.stalled",
        weight: 2,
        product_area: "onboarding",
        journey_stage: "onboarding",
        severe: false,
        subjects: &["Our rollout is behind schedule", "Still not live after six weeks"],
        problems: &[
            "We are still not live and our go-live date has slipped twice.",
            "The rollout stalled because nobody on our side owns it anymore.",
            "Our onboarding is behind schedule and leadership is asking why.",
        ],
        comments: &[
            "Six weeks in and we are still not live.",
            "Our rollout stalled and we lost momentum.",
        ],
        resolutions: &[
            "The stalled rollout has a new go-live date and named owners.",
            "Restarted the rollout with weekly check-ins.",
        ],
    },
    // ------------------------------------------------------------------------------------ billing
    Topic {
        tag: "billing.invoice-error",
        weight: 5,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Invoice shows the wrong amount", "Incorrect invoice for March", "We were billed for the wrong plan"],
        problems: &[
            "Our latest invoice is wrong: it lists 45 seats but we only have 30.",
            "The invoice amount does not match the quote we signed.",
            "We were billed for the wrong plan and the proration looks miscalculated.",
        ],
        comments: &[
            "Invoices are wrong almost every month.",
            "Another incorrect invoice, please get the basics right.",
        ],
        resolutions: &[
            "Fixed the invoice error and reissued it.",
            "Corrected the wrong amount on the invoice and sent a credit.",
        ],
    },
    Topic {
        tag: "billing.double-charge",
        weight: 3,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Charged twice this month", "Duplicate charge on our card"],
        problems: &[
            "We were charged twice for the same subscription period.",
            "Our card statement shows a duplicate charge from you on the same day.",
            "It looks like we have been double charged after the plan change.",
        ],
        comments: &["Getting charged twice is not acceptable.", "We were overcharged and it took weeks to sort out."],
        resolutions: &[
            "Voided the duplicate charge; the customer will see it reversed in 5-7 days.",
            "Confirmed the double charge and reversed the second payment.",
        ],
    },
    Topic {
        tag: "billing.address-tax",
        weight: 2,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Update our billing address", "VAT number missing on invoices", "Tax exemption certificate"],
        problems: &[
            "Please update the billing address to our new office in Lyon.",
            "Our VAT number is missing, so VAT was added although we are reverse charge.",
            "We are tax exempt; where can I upload our exemption certificate?",
        ],
        comments: &["Sales tax on our invoices is still wrong.", "Changing the billing address should not need a ticket."],
        resolutions: &[
            "Updated the billing address and the VAT number on the account.",
            "Applied the tax exemption and reissued the affected invoices.",
        ],
    },
    Topic {
        tag: "payments.card-declined",
        weight: 3,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Card declined on renewal", "Payment failed"],
        problems: &[
            "Our card was declined at renewal, but the bank says nothing was blocked.",
            "The payment failed three times yesterday with a generic message.",
            "Every card we try gets declined on the checkout page.",
        ],
        comments: &["The payment failed and nobody told us until access was cut.", "Card declined again at renewal."],
        resolutions: &[
            "The issuing bank declined the card; the retry went through.",
            "Cleared the declined payment and retried the card.",
        ],
    },
    Topic {
        tag: "payments.payment-method",
        weight: 2,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Change payment method", "Can we pay by bank transfer?"],
        problems: &[
            "We need to update the credit card on file before the next charge.",
            "Can we switch the payment method to bank transfer with a purchase order?",
            "Our finance team wants to pay by SEPA instead of card.",
        ],
        comments: &["Updating our card should be easier.", "Please support paying by bank transfer."],
        resolutions: &[
            "Switched the account to invoice payment by bank transfer.",
            "Sent a secure link to update the card on file.",
        ],
    },
    Topic {
        tag: "refunds.request",
        weight: 2,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Refund request", "Requesting a refund for unused seats"],
        problems: &[
            "We would like to request a refund for the seats we never used.",
            "Please issue a refund for the annual plan we bought by mistake.",
            "Can we get a partial refund for the days the product was unavailable?",
        ],
        comments: &["We asked for a refund and are still arguing about it.", "A simple refund request took weeks."],
        resolutions: &["Issued a partial refund for the unused seats.", "Approved the refund request and sent a credit note."],
    },
    Topic {
        tag: "refunds.status",
        weight: 1,
        product_area: "billing",
        journey_stage: "billing",
        severe: false,
        subjects: &["Where is our refund?", "Refund not received"],
        problems: &[
            "We are still waiting for the refund you confirmed three weeks ago.",
            "The refund has not arrived on our card yet.",
            "What is the refund status for the credit you promised last month?",
        ],
        comments: &["Still waiting for the refund that was promised.", "Our refund has not arrived after a month."],
        resolutions: &["The refund had not arrived; shared the reference with the customer's bank.", "The refund was still pending; processed it again."],
    },
    Topic {
        tag: "pricing.too-expensive",
        weight: 3,
        product_area: "billing",
        journey_stage: "renewal",
        severe: false,
        subjects: &["Price increase at renewal", "Pricing is too expensive for us"],
        problems: &[
            "The price increase at renewal is more than 30 percent, which we cannot justify the cost of.",
            "Honestly the product has become too expensive for a team our size.",
            "With budget cuts this year the current price is out of our budget.",
        ],
        comments: &["Too expensive for what we use.", "The price hike this year was hard to swallow."],
        resolutions: &[
            "Explained the price increase and offered a two-year rate lock.",
            "Account manager followed up on the price increase with a discount.",
        ],
    },
    Topic {
        tag: "pricing.plan-confusion",
        weight: 2,
        product_area: "billing",
        journey_stage: "evaluation",
        severe: false,
        subjects: &["Which plan do we need?", "Difference between the plans"],
        problems: &[
            "Which plan includes audit logs? The pricing page is not clear about it.",
            "What is the difference between the plans for teams over fifty people?",
            "We are confused about which add-ons are included in our plan.",
        ],
        comments: &["The pricing page makes it hard to compare plans.", "Not clear which plan we need."],
        resolutions: &["Explained the plans and what each includes.", "Sent the comparison of plans and add-ons."],
    },
    // ------------------------------------------------------------------------------------ account
    Topic {
        tag: "account.seats",
        weight: 2,
        product_area: "account",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Add more seats", "Seat count for next quarter"],
        problems: &[
            "We need to add more seats for the new hires starting on Monday.",
            "How do we buy additional licenses without waiting for renewal?",
            "We hit the user limit and cannot invite new users.",
        ],
        comments: &["Adding seats should be self-service.", "Buying extra licenses took a week."],
        resolutions: &["Added ten seats to the subscription.", "Raised the seat count and sent the updated order form."],
    },
    Topic {
        tag: "account.ownership",
        weight: 1,
        product_area: "account",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Transfer account ownership", "Our account owner left the company"],
        problems: &[
            "Our account owner left the company and we need to transfer ownership to Priya.",
            "Please change the owner of our workspace to our new operations lead.",
            "Who is the primary contact on our side? We need to reassign it.",
        ],
        comments: &["Changing the account owner was a long process.", "Transfer ownership should not need a notary."],
        resolutions: &["Transferred ownership to the new admin.", "Updated the primary contact after verification."],
    },
    // ------------------------------------------------------------------------------------ access
    Topic {
        tag: "access.login",
        weight: 6,
        product_area: "auth",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Can't log in", "Login page keeps reloading", "Unable to sign in since this morning"],
        problems: &[
            "Several users can't log in since this morning; the login page just reloads.",
            "I am unable to sign in from the desktop app but the browser works.",
            "The app keeps logging me out every few minutes.",
        ],
        comments: &["Login fails far too often.", "We can't log in half the time."],
        resolutions: &["Cleared a stale session cookie; login works again.", "Fixed the login redirect for the affected users."],
    },
    Topic {
        tag: "access.password-reset",
        weight: 3,
        product_area: "auth",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Password reset email never arrives", "Forgot password link expired"],
        problems: &[
            "I clicked forgot password but the reset link expires before it arrives.",
            "Our users cannot reset their password, the reset email is empty.",
            "Please reset my password, the self-service page gives me a blank screen.",
        ],
        comments: &["Resetting a password should not take a ticket.", "The password reset flow is broken for us."],
        resolutions: &["Sent a manual password reset link.", "Fixed the reset email template."],
    },
    Topic {
        tag: "access.sso",
        weight: 3,
        product_area: "auth",
        journey_stage: "adoption",
        severe: false,
        subjects: &["SSO login failing with Okta", "SAML assertion error"],
        problems: &[
            "Our SSO stopped working after we rotated the Okta certificate; users see an invalid SAML assertion.",
            "Single sign-on through Azure AD loops back to the identity provider.",
            "SCIM provisioning from Okta fails for new users.",
        ],
        comments: &["SSO breaks every time our IT team changes anything.", "Single sign-on setup was painful."],
        resolutions: &[
            "Updated the SAML certificate fingerprint; SSO works.",
            "Fixed the identity provider redirect URL.",
        ],
    },
    Topic {
        tag: "access.two-factor",
        weight: 2,
        product_area: "auth",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Lost 2FA device", "Verification code not accepted"],
        problems: &[
            "I lost my phone and with it my 2FA authenticator; how do I get back in?",
            "The verification code from the authenticator app is never accepted.",
            "Can admins enforce MFA for every user in the workspace?",
        ],
        comments: &["Two-factor login is fiddly.", "Our team keeps losing their 2FA codes."],
        resolutions: &["Reset two-factor for the user after identity checks.", "Explained how to enforce MFA for the workspace."],
    },
    Topic {
        tag: "access.locked-out",
        weight: 2,
        product_area: "auth",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Locked out of our account", "Account locked after failed attempts"],
        problems: &[
            "Our only admin is locked out after too many attempts.",
            "The account has been locked and nobody on our side can get in.",
            "My account was suspended without notice.",
        ],
        comments: &["Being locked out for two days hurt us.", "Getting locked out is far too easy."],
        resolutions: &["Unlocked the admin account that was locked out.", "Lifted the lockout and reset the attempt counter."],
    },
    Topic {
        tag: "permissions.roles",
        weight: 2,
        product_area: "admin",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Custom roles", "Changing a user's role"],
        problems: &[
            "We need custom roles so that contractors get read-only access.",
            "How do I change the role of a user from editor to viewer?",
            "Admin rights seem to be granted to every manager role by default.",
        ],
        comments: &["User roles are too coarse for us.", "We need role-based access per project."],
        resolutions: &["Showed how to create a custom role.", "Updated the user roles as requested."],
    },
    Topic {
        tag: "permissions.denied",
        weight: 2,
        product_area: "admin",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Access denied on shared projects", "Permission denied error"],
        problems: &[
            "Two of our analysts get access denied on projects they own.",
            "Users see permission denied when opening shared folders.",
            "Since yesterday I no longer have access to the admin console, it says forbidden.",
        ],
        comments: &["Permission denied errors everywhere since the update.", "People get access denied on their own work."],
        resolutions: &["Repaired the sharing settings behind the access denied errors.", "Restored access for the users who got permission denied."],
    },
    // ------------------------------------------------------------------------------------ integrations
    Topic {
        tag: "integrations.api-errors",
        weight: 5,
        product_area: "api",
        journey_stage: "adoption",
        severe: false,
        subjects: &["API returning 500 errors", "Internal server error on the orders endpoint"],
        problems: &[
            "Our nightly job gets 500 errors from the API on every request to the orders endpoint.",
            "The API is returning internal server error for about a third of our calls.",
            "Since the SDK update the API returns 400 for payloads that used to work.",
        ],
        comments: &["The API errors are hurting our own customers.", "Too many API errors since the last release."],
        resolutions: &["Fixed the endpoint regression behind the 500 errors.", "A bad deploy caused the API errors; rolled back."],
    },
    Topic {
        tag: "integrations.webhooks",
        weight: 3,
        product_area: "integrations",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Webhooks not firing", "Webhook delivery delayed"],
        problems: &[
            "Our webhooks stopped arriving yesterday at noon.",
            "Webhook delivery is delayed by hours and retries never happen.",
            "The webhook signature check fails on every payload.",
        ],
        comments: &["Webhooks are unreliable for us.", "We miss events because webhooks fail silently."],
        resolutions: &["Re-enabled the webhook after it was paused for failures.", "Replayed the missed webhook deliveries."],
    },
    Topic {
        tag: "integrations.rate-limits",
        weight: 2,
        product_area: "api",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Hitting rate limits", "429 too many requests"],
        problems: &[
            "We keep hitting the rate limit during our nightly sync and get 429 responses.",
            "Our integration is throttled to a crawl, can you raise the API quota?",
            "Too many requests errors appear even at low volume.",
        ],
        comments: &["The rate limits are too low for real use.", "We get throttled constantly."],
        resolutions: &["Raised the rate limit for the account.", "Explained batching to stay under the API quota."],
    },
    Topic {
        tag: "integrations.crm-sync",
        weight: 3,
        product_area: "integrations",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Salesforce sync failing", "HubSpot sync creating duplicates"],
        problems: &[
            "The Salesforce sync has failed every night this week.",
            "Our HubSpot sync is creating duplicate contacts.",
            "Custom fields are not mapping to Salesforce anymore.",
        ],
        comments: &["The CRM sync breaks every few weeks.", "Salesforce sync is our biggest pain point."],
        resolutions: &["Re-authorised the Salesforce connection and re-ran the sync.", "Fixed the HubSpot field mapping."],
    },
    Topic {
        tag: "integrations.connector",
        weight: 3,
        product_area: "integrations",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Slack integration stopped working", "Zapier connection disconnected"],
        problems: &[
            "Our Slack integration stopped working, no messages are posted to the channel.",
            "The Zapier connection keeps getting disconnected.",
            "The Jira integration broke after we renamed our project keys.",
        ],
        comments: &["The Slack integration is flaky at best.", "The Slack and Jira integrations break too often."],
        resolutions: &["Reconnected the Slack integration.", "The token expired; reconnected the integration."],
    },
    // ------------------------------------------------------------------------------------ reporting
    Topic {
        tag: "reporting.dashboards",
        weight: 3,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Dashboard filter not applied", "Chart is empty"],
        problems: &[
            "The date range filter on our custom dashboard is ignored.",
            "Two widgets on the team dashboard show an empty chart.",
            "The revenue chart is not updating since Friday.",
        ],
        comments: &["Dashboards need better filters.", "Half our charts are blank."],
        resolutions: &["Fixed the dashboard filter.", "Rebuilt the cached widgets; the charts load again."],
    },
    Topic {
        tag: "reporting.scheduled",
        weight: 2,
        product_area: "reporting",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Scheduled report not sent", "Weekly report email missing"],
        problems: &[
            "Our weekly report email did not go out on Monday.",
            "The scheduled reports arrive with the previous week's numbers.",
            "Can the daily digest be sent to a distribution list?",
        ],
        comments: &["Scheduled reports are unreliable.", "The weekly report keeps going missing."],
        resolutions: &["Re-enabled the scheduled report.", "Fixed the time zone of the weekly report."],
    },
    // ------------------------------------------------------------------------------------ performance
    Topic {
        tag: "performance.slow",
        weight: 5,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Dashboard very slow", "Pages slow to load", "Search is sluggish"],
        problems: &[
            "The dashboard takes forever to load, often more than 30 seconds.",
            "Pages are slow to load for everyone in our EMEA office.",
            "Search has become sluggish since the last release.",
        ],
        comments: &["The app is so slow lately.", "Load times have doubled this quarter."],
        resolutions: &["Added an index that brought page load times down.", "Cleared a slow query; load times are back to normal."],
    },
    Topic {
        tag: "performance.timeouts",
        weight: 3,
        product_area: "reporting",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Reports timing out", "Gateway timeout on large exports"],
        problems: &[
            "Our monthly report times out after 60 seconds.",
            "We get a 504 gateway timeout when opening the yearly view.",
            "Requests keep timing out during business hours.",
        ],
        comments: &["Timeouts make reporting useless for us.", "Everything large times out."],
        resolutions: &["Raised the timeout for large reports.", "Moved the report to background processing to avoid timeouts."],
    },
    Topic {
        tag: "reliability.outage",
        weight: 3,
        product_area: "dashboard",
        journey_stage: "support",
        severe: true,
        subjects: &["Site is down", "Outage for our whole team", "Service unavailable"],
        problems: &[
            "The app is down for our whole team, we only get a 503 page.",
            "Production is down and the status page still says everything is fine.",
            "This is the second outage this month and we lost a full morning of work.",
        ],
        comments: &["Too much downtime this quarter.", "The outage last week cost us a client demo."],
        resolutions: &["Service restored after the outage; shared the postmortem.", "The outage was caused by a failed database failover."],
    },
    Topic {
        tag: "reliability.intermittent",
        weight: 2,
        product_area: "dashboard",
        journey_stage: "support",
        severe: false,
        subjects: &["Intermittent failures", "Random disconnects"],
        problems: &[
            "Saving randomly fails, maybe one time in ten.",
            "The connection drops intermittently for users on the VPN.",
            "It comes and goes, every few minutes the page shows an empty state.",
        ],
        comments: &["Things fail intermittently and it is maddening.", "Flaky all week."],
        resolutions: &["Replaced a faulty load balancer node behind the intermittent errors.", "Fixed the sporadic session drops."],
    },
    // ------------------------------------------------------------------------------------ bugs
    Topic {
        tag: "bugs.crash",
        weight: 3,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Editor keeps crashing", "White screen after clicking save"],
        problems: &[
            "The editor keeps crashing when we paste a large table.",
            "After clicking save we get a white screen and lose the page.",
            "The browser tab freezes whenever we open the planning board.",
        ],
        comments: &["The app crashed on me three times today.", "Constant crashes in the editor."],
        resolutions: &["Fixed the crash when pasting large tables.", "Shipped a fix for the white screen on save."],
    },
    Topic {
        tag: "bugs.data-wrong",
        weight: 3,
        product_area: "reporting",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Numbers don't match", "Totals are off in the summary"],
        problems: &[
            "The numbers in the summary don't match the detail view.",
            "Conversions are double counted since Tuesday.",
            "There is a discrepancy between the totals and our own records.",
        ],
        comments: &["We cannot trust the numbers anymore, they are wrong every week.", "The data is wrong and our board noticed."],
        resolutions: &["Fixed the double counting in the summary.", "Recalculated the totals, which were wrong because of a bug."],
    },
    Topic {
        tag: "bugs.display",
        weight: 2,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Layout is broken", "Buttons overlapping"],
        problems: &[
            "The buttons overlap the table on smaller screens.",
            "In dark mode the labels are not rendering at all.",
            "Column headers are misaligned since the redesign.",
        ],
        comments: &["The layout is broken on laptops.", "Lots of small rendering glitches."],
        resolutions: &["Fixed the overlapping buttons.", "Fixed the label rendering in dark mode."],
    },
    // ------------------------------------------------------------------------------------ data
    Topic {
        tag: "data.export",
        weight: 3,
        product_area: "data",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Export to CSV fails", "Export is empty"],
        problems: &[
            "Export to CSV fails for anything over ten thousand rows.",
            "The export is empty even though the table shows data.",
            "The bulk export has been stuck at 90 percent for a day.",
        ],
        comments: &["Exporting our data is a struggle.", "The export button does nothing half the time."],
        resolutions: &["Fixed the export for large tables.", "Restarted the stuck export job."],
    },
    Topic {
        tag: "data.import",
        weight: 2,
        product_area: "data",
        journey_stage: "adoption",
        severe: false,
        subjects: &["CSV import failed", "Rows were skipped on import"],
        problems: &[
            "Our CSV import failed with no explanation.",
            "When importing the spreadsheet, a third of the rows were skipped.",
            "The column mapping is lost every time we upload a file.",
        ],
        comments: &["Imports fail without telling us why.", "CSV import needs better errors."],
        resolutions: &["Fixed the date format that made the import fail.", "Explained the column mapping for imports."],
    },
    Topic {
        tag: "data.loss",
        weight: 2,
        product_area: "data",
        journey_stage: "support",
        severe: true,
        subjects: &["Records disappeared", "Data loss after sync"],
        problems: &[
            "About 200 records disappeared overnight.",
            "A user accidentally deleted a project; can you restore from backup?",
            "The history for last quarter is gone after the sync.",
        ],
        comments: &["We lost data and trust with it.", "Our project history vanished."],
        resolutions: &["Restored the deleted records from backup.", "Recovered the project history from the nightly backup."],
    },
    // ------------------------------------------------------------------------------------ usability, features
    Topic {
        tag: "usability.confusing-ui",
        weight: 3,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["New design is confusing", "Hard to find settings"],
        problems: &[
            "The new design is confusing; our users can't find where the settings went.",
            "Navigation is not intuitive and people get lost.",
            "It is hard to find the archive since the menu changed.",
        ],
        comments: &["The interface is confusing.", "Too cluttered, hard to use for new people."],
        resolutions: &["Shared a short guide, the new design is confusing at first.", "Passed the feedback on the new design to the product team."],
    },
    Topic {
        tag: "usability.accessibility",
        weight: 1,
        product_area: "dashboard",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Screen reader support", "Contrast too low"],
        problems: &[
            "One of our colleagues uses a screen reader and the forms are not announced.",
            "The contrast ratio of the grey text fails WCAG checks.",
            "Keyboard navigation gets trapped in the date picker.",
        ],
        comments: &["Accessibility needs work.", "Not usable with a screen reader."],
        resolutions: &["Logged the accessibility gaps with the product team.", "Fixed the keyboard navigation trap."],
    },
    Topic {
        tag: "features.request",
        weight: 4,
        product_area: "reporting",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Feature request: recurring tasks", "Suggestion for the calendar view"],
        problems: &[
            "It would be great if we could schedule recurring tasks.",
            "Please add a calendar view for the team plan.",
            "We would love an option to group items by owner.",
        ],
        comments: &["Would be nice to have a calendar view.", "Please add recurring tasks."],
        resolutions: &["Logged the feature request with the product team.", "Shared the roadmap item for this feature request."],
    },
    Topic {
        tag: "features.missing",
        weight: 2,
        product_area: "reporting",
        journey_stage: "evaluation",
        severe: false,
        subjects: &["No way to set approval steps", "Missing feature for audits"],
        problems: &[
            "The product does not support multi-step approvals, which is a deal breaker for our auditors.",
            "There is no way to lock a period once it is closed.",
            "It is not possible to set different currencies per team.",
        ],
        comments: &["Lacks basic approval workflows.", "Missing features keep us on spreadsheets."],
        resolutions: &["Explained the workaround for the missing feature.", "There is no way to do this today; added the account to the approvals beta."],
    },
    // ------------------------------------------------------------------------------------ notifications, mobile
    Topic {
        tag: "notifications.email-delivery",
        weight: 2,
        product_area: "notifications",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Not receiving emails", "Invite email never arrives"],
        problems: &[
            "We are not receiving emails from you since Tuesday.",
            "The invite email never arrives for new users at our domain.",
            "Email notifications stopped for the whole team.",
        ],
        comments: &["We never get the emails.", "Notification emails go to junk."],
        resolutions: &["Emails had bounced; removed the domain from the suppression list.", "Fixed the sender configuration for the invite email."],
    },
    Topic {
        tag: "notifications.too-many",
        weight: 2,
        product_area: "notifications",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Too many notifications", "How to turn off emails"],
        problems: &[
            "We get far too many notifications, people have started to ignore them all.",
            "How do we turn off the email for every comment?",
            "Our managers are flooded with alerts they did not ask for.",
        ],
        comments: &["Too many emails.", "The notifications are noisy."],
        resolutions: &["Showed the notification settings.", "Turned off the comment emails for the workspace."],
    },
    Topic {
        tag: "mobile.crash",
        weight: 2,
        product_area: "mobile",
        journey_stage: "adoption",
        severe: false,
        subjects: &["iOS app crashes on launch", "Android app keeps crashing"],
        problems: &[
            "The iOS app crashes on launch since the latest update.",
            "On Android the app keeps crashing when we open a photo.",
            "The iPhone app freezes on the login screen.",
        ],
        comments: &["The mobile app crashes constantly.", "The iPad app crashes all the time."],
        resolutions: &["Released an iOS fix for the crash on launch.", "The Android crash is fixed in version 5.2."],
    },
    Topic {
        tag: "mobile.sync",
        weight: 1,
        product_area: "mobile",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Mobile app not syncing", "Offline changes lost"],
        problems: &[
            "The mobile app is not syncing with the web version.",
            "Changes on my phone made offline never show up.",
            "The Android app shows old data until we reinstall.",
        ],
        comments: &["The app doesn't sync reliably.", "Offline mode loses our changes."],
        resolutions: &["Fixed how the mobile app handles sync conflicts.", "Cleared the stuck offline queue."],
    },
    // ------------------------------------------------------------------------------------ delivery
    Topic {
        tag: "delivery.late",
        weight: 2,
        product_area: "shipping",
        journey_stage: "support",
        severe: false,
        subjects: &["Order hasn't arrived", "Late delivery"],
        problems: &[
            "Our order hasn't arrived and the expected delivery date was last Friday.",
            "The shipment of hardware is two weeks late.",
            "Where is my order? It still has not shipped.",
        ],
        comments: &["Delivery was late again.", "The box arrived a week late."],
        resolutions: &["The late order was delivered today.", "Reshipped the delayed order by express."],
    },
    Topic {
        tag: "delivery.damaged",
        weight: 1,
        product_area: "shipping",
        journey_stage: "support",
        severe: false,
        subjects: &["Box arrived damaged", "Item broken in transit"],
        problems: &[
            "The box was crushed and the scanner inside arrived damaged.",
            "Two of the devices arrived broken.",
            "The package was damaged in transit.",
        ],
        comments: &["Our order arrived damaged.", "Packaging needs work, items came dented."],
        resolutions: &["Sent a replacement for the damaged items.", "Filed a claim for the damaged items and reshipped."],
    },
    Topic {
        tag: "delivery.tracking",
        weight: 1,
        product_area: "shipping",
        journey_stage: "support",
        severe: false,
        subjects: &["Tracking number not working", "No tracking information"],
        problems: &[
            "The tracking number you sent is invalid on the FedEx site.",
            "The tracking page has not updated in four days.",
            "We never received tracking information for the shipment.",
        ],
        comments: &["Tracking never works.", "No tracking info for days."],
        resolutions: &["Sent the correct tracking number.", "Chased the carrier for a tracking update."],
    },
    Topic {
        tag: "delivery.wrong-item",
        weight: 1,
        product_area: "shipping",
        journey_stage: "support",
        severe: false,
        subjects: &["Wrong item received", "Missing items in our order"],
        problems: &[
            "We received the wrong item, this is not what we ordered.",
            "Three items are missing from the order.",
            "The box contained the wrong size of mounts.",
        ],
        comments: &["We got the wrong items twice.", "Orders keep arriving with items missing."],
        resolutions: &["Shipped the missing items.", "Exchanged the wrong item at no cost."],
    },
    // ------------------------------------------------------------------------------------ security
    Topic {
        tag: "security.privacy",
        weight: 2,
        product_area: "security",
        journey_stage: "evaluation",
        severe: false,
        subjects: &["GDPR data subject request", "Data processing agreement"],
        problems: &[
            "We received a GDPR data subject request and need all personal data for one user.",
            "Can you send your data processing agreement for our legal team?",
            "Where is our data stored? We need data residency in the EU.",
        ],
        comments: &["GDPR questions take too long to answer.", "Your DPA process takes far too long."],
        resolutions: &["Sent the signed DPA.", "Exported the personal data for the request."],
    },
    Topic {
        tag: "security.compliance",
        weight: 2,
        product_area: "security",
        journey_stage: "evaluation",
        severe: false,
        subjects: &["SOC 2 report request", "Security questionnaire"],
        problems: &[
            "Our procurement needs your SOC 2 report before renewal.",
            "Please complete the attached security questionnaire by Friday.",
            "Do you have a recent penetration test summary and ISO 27001 certificate?",
        ],
        comments: &["The security review took months.", "Getting the SOC 2 report was hard."],
        resolutions: &["Shared the SOC 2 report under NDA.", "Completed the security questionnaire."],
    },
    Topic {
        tag: "security.breach",
        weight: 1,
        product_area: "security",
        journey_stage: "support",
        severe: true,
        subjects: &["Suspicious login activity", "Possible data breach"],
        problems: &[
            "We saw a suspicious login from a country where we have no staff.",
            "One of our admins fell for a phishing email; is our workspace compromised?",
            "A customer says our data leaked; was there a security incident on your side?",
        ],
        comments: &["We worry about security after the data breach.", "Hearing about the breach from the news was not acceptable."],
        resolutions: &["Revoked the compromised sessions and confirmed no data was accessed.", "Shared the security incident report."],
    },
    // ------------------------------------------------------------------------------------ support experience
    Topic {
        tag: "support.slow-response",
        weight: 3,
        product_area: "support",
        journey_stage: "support",
        severe: false,
        subjects: &["No response to our ticket", "Still waiting for a reply"],
        problems: &[
            "We opened a ticket last week and have had no response.",
            "We have been waiting for days for someone to get back to us.",
            "Nobody has responded to our escalation yet.",
        ],
        comments: &["Support response time is too slow.", "Waited four days for a reply."],
        resolutions: &["Apologised for the slow response and answered the open questions.", "Reviewed why the ticket got no reply for days."],
    },
    Topic {
        tag: "support.unhelpful",
        weight: 2,
        product_area: "support",
        journey_stage: "support",
        severe: false,
        subjects: &["Answer did not help", "Canned response"],
        problems: &[
            "The answer we got was a canned response that did not help at all.",
            "The agent didn't read our question and closed the ticket.",
            "We got a generic answer that ignores our setup.",
        ],
        comments: &["Support answers are not helpful.", "Canned responses every time."],
        resolutions: &["A senior engineer took over after the unhelpful first answer.", "Coached the team on the unhelpful reply."],
    },
    // ------------------------------------------------------------------------------------ churn
    Topic {
        tag: "churn.cancellation",
        weight: 2,
        product_area: "account",
        journey_stage: "renewal",
        severe: false,
        subjects: &["Cancel our subscription", "Notice of non-renewal"],
        problems: &[
            "Please cancel our subscription at the end of the current term.",
            "We will not renew our contract in June.",
            "How do we close our account and get a copy of our data first?",
        ],
        comments: &["We are not renewing.", "We are going to cancel our subscription."],
        resolutions: &["Confirmed the cancellation at the end of the term.", "Account manager set up a call about the non-renewal."],
    },
    Topic {
        tag: "churn.competitor",
        weight: 2,
        product_area: "account",
        journey_stage: "renewal",
        severe: false,
        subjects: &["Evaluating alternatives", "Comparing with another vendor"],
        problems: &[
            "We are evaluating other vendors ahead of our renewal.",
            "Our leadership asked us to look at alternatives that include reporting.",
            "A competitor offers the same for half the price.",
        ],
        comments: &["We are evaluating other vendors.", "Considering other options at renewal."],
        resolutions: &["Account manager shared a comparison with the competitors they are evaluating.", "Booked an executive call before they sign with a competitor."],
    },
    Topic {
        tag: "churn.downgrade",
        weight: 2,
        product_area: "account",
        journey_stage: "renewal",
        severe: false,
        subjects: &["Downgrade our plan", "Reduce our seats at renewal"],
        problems: &[
            "We want to downgrade to the basic plan next month.",
            "Please reduce our seats from 80 to 40 at renewal.",
            "We need to move to a cheaper plan because of the budget.",
        ],
        comments: &["We will downgrade at renewal.", "We plan to reduce our seats."],
        resolutions: &["The downgrade to the basic plan takes effect at renewal.", "Reduced the seats as requested."],
    },
    Topic {
        tag: "adoption.usage-drop",
        weight: 1,
        product_area: "account",
        journey_stage: "adoption",
        severe: false,
        subjects: &["Low adoption in our team", "Our team stopped using the product"],
        problems: &[
            "Most of our team stopped using the product after the champion left.",
            "Usage has dropped a lot since the reorganisation.",
            "Nobody uses the weekly planning feature anymore.",
        ],
        comments: &["Honestly we barely use it now.", "Our team stopped using it."],
        resolutions: &["The CSM booked a relaunch session because usage has dropped.", "Shared ideas for the team that stopped using the product."],
    },
];

/// Opening lines of a ticket body. They name no topic.
pub(crate) const GREETINGS: &[&str] = &[
    "Hi team,",
    "Hello,",
    "Hi there,",
    "Good morning,",
    "Hey folks,",
];

/// Context a customer adds. Written to match no taxonomy rule.
pub(crate) const CONTEXT: &[&str] = &[
    "We noticed this on Monday morning.",
    "It started after the weekend.",
    "Several people in our team see the same thing.",
    "It worked fine last week.",
    "I attached two screenshots.",
    "Our admin tried once more this afternoon with the same result.",
    "A colleague in our London office sees the same.",
    "We use it every day, so this matters to us.",
];

/// Closing lines. They name no topic.
pub(crate) const CLOSERS: &[&str] = &[
    "Thanks.",
    "Thanks in advance.",
    "Can you take a look?",
    "Let me know if you need anything else from us.",
    "Appreciate it.",
];

/// Added to urgent tickets: urgency words (the META tag `support.urgent-ticket`), never the topic.
pub(crate) const URGENCY: &[&str] = &[
    "This is urgent, the whole team is blocked.",
    "Please treat this as business critical.",
    "We need this fixed today.",
];

/// Added when a noisy account writes about its recurring pain again (the META tag `support.repeat-tickets`).
pub(crate) const REPEATS: &[&str] = &[
    "This is the third time we have raised this.",
    "We have reported this several times now.",
    "Same issue again, like last week.",
];

/// Churn intent, added now and then to unhappy texts about any topic.
pub(crate) const CHURN_INTENT: &[&str] = &[
    "To be honest we are evaluating other vendors because of this.",
    "If this continues we will not renew.",
    "We are considering other options at this point.",
];

/// Ticket subjects and bodies, and comments, that say nothing taggable (the ~10% that stay uncategorized).
pub(crate) const SMALL_TALK_SUBJECTS: &[&str] = &[
    "Quick question",
    "Thanks!",
    "Following up from our call",
    "Meeting next week",
];
pub(crate) const SMALL_TALK: &[&str] = &[
    "Thanks for the quick help yesterday, all good on our side.",
    "Just checking in ahead of our quarterly review next week.",
    "Could you send the slides from the last call?",
    "Happy new year from all of us!",
    "Our team enjoyed the session, thanks for making time.",
];

/// Survey comments from happy customers. They name no topic.
pub(crate) const PRAISE: &[&str] = &[
    "Great product, the team loves it.",
    "Really happy with how things are going.",
    "Everything just works, thank you.",
    "Our account manager is fantastic.",
    "Saves us hours every week.",
    "Quick and friendly answers every time.",
];

/// Survey comments from happy customers that name the part of the product they like, with the words of
/// a top-level tag only: praise lands on the area (`reporting`, `integrations`, ...), never on a problem.
pub(crate) const AREA_PRAISE: &[&str] = &[
    "Love the dashboards, they save us hours.",
    "The integrations with our stack are excellent.",
    "Billing is simple and clear.",
    "Onboarding was smooth and the kickoff well run.",
    "The mobile app is great for our field team.",
    "Performance has improved a lot this year.",
    "The notifications are just right now.",
    "Shipping is always fast.",
    "Your security and compliance answers were quick.",
    "The new features are exactly what we needed.",
];

/// Unhappy survey comments that name no topic, only the feeling: the sentiment tags.
pub(crate) const DETRACTOR_COMMENTS: &[&str] = &[
    "Would not recommend in its current state.",
    "Disappointed with the last few months.",
];
pub(crate) const LOW_CSAT_COMMENTS: &[&str] = &[
    "Very unhappy with how this was handled.",
    "Poor service overall.",
];
pub(crate) const HIGH_EFFORT_COMMENTS: &[&str] = &[
    "Took forever to get a simple answer.",
    "Too many steps to get anything done, such a hassle.",
];

/// Ticket follow-ups (`ticket.updated` comments) that name no topic.
pub(crate) const FOLLOW_UPS: &[&str] = &[
    "Any news on this?",
    "Attached the logs you asked for.",
    "Adding my colleague Sam in copy.",
    "Thanks, we will try that and let you know.",
];

/// Follow-ups that complain about the support experience itself.
pub(crate) const SUPPORT_COMPLAINTS: &[&str] = &[
    "Still waiting for a reply on this, it has been three days.",
    "No response since Monday, please escalate.",
    "Your last answer did not help, it ignores what we wrote.",
];

/// Resolutions that name no topic.
pub(crate) const GENERIC_RESOLUTIONS: &[&str] = &[
    "Resolved with the customer over a call.",
    "Customer confirmed all is well.",
    "Answered the question by email.",
];

/// Word lists for company names: a stem, then a noun that fits the segment, then a legal form that fits
/// the region. 40 x 5 x 3 combinations keep names varied without looking random.
pub(crate) const NAME_STEMS: &[&str] = &[
    "Northwind",
    "Bluefin",
    "Acorn",
    "Cobalt",
    "Summit",
    "Harbor",
    "Juniper",
    "Granite",
    "Lumen",
    "Meridian",
    "Orchard",
    "Pinecrest",
    "Quarry",
    "Redwood",
    "Saffron",
    "Tidewater",
    "Umber",
    "Vantage",
    "Willow",
    "Zephyr",
    "Atlas",
    "Beacon",
    "Cedar",
    "Driftwood",
    "Ember",
    "Falcon",
    "Glacier",
    "Horizon",
    "Ironbark",
    "Kestrel",
    "Lighthouse",
    "Maple",
    "Nimbus",
    "Oakridge",
    "Polaris",
    "Riverbend",
    "Sequoia",
    "Trillium",
    "Aurora",
    "Basalt",
];

pub(crate) const SEGMENTS: &[(&str, &[&str])] = &[
    (
        "saas",
        &["Labs", "Software", "Cloud", "Systems", "Analytics"],
    ),
    (
        "ecommerce",
        &["Goods", "Retail", "Outfitters", "Supply", "Market"],
    ),
    (
        "fintech",
        &["Capital", "Pay", "Ledger", "Finance", "Lending"],
    ),
    (
        "healthcare",
        &["Health", "Care", "Clinics", "Medical", "Diagnostics"],
    ),
    (
        "education",
        &["Learning", "Academy", "Schools", "Education", "Tutoring"],
    ),
];

pub(crate) const REGIONS: &[(&str, &[&str])] = &[
    ("amer", &["Inc.", "LLC", "Corp."]),
    ("emea", &["GmbH", "Ltd", "SAS"]),
    ("apac", &["Pty Ltd", "Pte Ltd", "KK"]),
];

/// Customer success managers by the tier they look after: the members of the CS teams in the default
/// `config/routes.toml` (cs-enterprise, cs-growth, then cs-digital and cs-ops), so that owner rules
/// resolve to people a queue knows.
pub(crate) const ENTERPRISE_CSMS: &[&str] = &["ana.lima", "ben.okafor", "chloe.martin"];
pub(crate) const MID_MARKET_CSMS: &[&str] =
    &["dev.patel", "elena.rossi", "farid.haddad", "grace.kim"];
pub(crate) const SMB_CSMS: &[&str] = &[
    "hugo.silva",
    "ines.moreau",
    "jonas.berg",
    "kai.nakamura",
    "lena.fischer",
];

/// First names of requesters, for ticket e-mail addresses.
pub(crate) const FIRST_NAMES: &[&str] = &[
    "alex", "maria", "sam", "priya", "tom", "yuki", "omar", "lucia", "jonas", "amara", "li",
    "sofia",
];

//! # A stateful Salesforce simulator
//!
//! [`start_salesforce`] serves one simulated Salesforce org on two loopback listeners:
//! * the **login host** ([`SalesforceSim::login_url`], standing for `login.salesforce.com`,
//!   `test.salesforce.com` or a My Domain): OAuth only — `/services/oauth2/{authorize, token,
//!   revoke, introspect, userinfo}` and the identity URL `/id/{orgId}/{userId}`. Any other path
//!   answers 404 `[{"errorCode":"NOT_FOUND",…}]`, so a client that sends data calls to the login
//!   host instead of the returned `instance_url` fails;
//! * the **instance host** ([`SalesforceSim::instance_url`], the token response's
//!   `instance_url`): the REST API under `/services/data/vXX.X/`. It does not serve the OAuth
//!   endpoints (a client must refresh against the login host that issued the token, §1.4).
//!
//! Both hosts answer the `/_sim/…` control endpoints. Everything follows
//! `shared/reference/salesforce.md` (cited as §n); where the reference is silent, the choice
//! made is stated below and marked *(choice)*.
//!
//! ## Data (§2, §5)
//! [`SalesforceData::from_population`] builds Leads (people `0..leads`) and Contacts (the next
//! `contacts` people) from the deterministic [`Population`](crate::Population), owned
//! round-robin by four sales reps; user 0 is the integration user the OAuth flows log in as
//! ([`SalesforceOptions::username`]). Each company of the Contacts' people becomes an
//! **Account** (`Name` = the company name, `Website` = `https://www.<domain>`,
//! `BillingCountry`, `NumberOfEmployees`, `Type`), and every seeded Contact's `AccountId` names
//! its company's Account (see *Accounts* below). Ids are 18 characters with the real case-safe
//! suffix (`00Q` Lead, `003` Contact, `001` Account, `005` User, `00D` org, `750` Bulk job, `01g` query locator,
//! `04l` Outbound notification, `04k` Outbound action); 15-character ids are accepted
//! wherever Salesforce accepts them. The field set and every describe attribute come from the
//! describe fixtures enrichd's tests use (`fixtures/salesforce/{lead,contact}_describe.json`),
//! including the custom fields of `mappings/salesforce.toml` (`Enrichment_Work_Email__c`,
//! `Work_Email_Source__c` (restricted picklist), …, `Enrichment_Status__c` (restricted
//! picklist Full/Partial/Empty), `Enriched_At__c` (datetime)), `Secondary_Email__c` (Text(20),
//! handy for `STRING_TOO_LONG`) and the formula `Email_Domain__c`.
//! [`SalesforceOptions::omit_fields`] removes custom fields (the org lacks them or the
//! integration user cannot see them: absent from describe, `INVALID_FIELD` in queries and
//! writes). [`SeedSpec::shared_modstamp`] gives N Leads one identical SystemModstamp (issue 6:
//! 50,000 Leads, 5,000 tied). Datetimes render as `2024-05-01T12:34:56.000+0000`; dates as
//! `YYYY-MM-DD`; booleans and numbers as JSON.
//! * *(choice)* Audit fields (`CreatedDate`, `LastModifiedDate`, `SystemModstamp`) are kept at
//!   **second** precision (always `.000`), as Salesforce stores them; ties are therefore common
//!   and a keyset cursor must handle them.
//! * Every successful write sets `LastModifiedDate = SystemModstamp = now` (sim clock) and
//!   `LastModifiedById`, even when no value changed (a DML update always does).
//! * `Name` (FirstName LastName) and `Email_Domain__c` are recomputed after writes.
//!
//! ## Accounts and parent relationship fields
//! Accounts are the parents of Contacts. Their field table (`account_fields.json` next to this
//! module: Id, IsDeleted, Name, Type, ParentId, Billing{Street,City,State,PostalCode,Country},
//! Phone, Fax, Website, Industry, AnnualRevenue, NumberOfEmployees, Description, OwnerId and the
//! audit fields) is a subset of the standard Account object, in describe's shape.
//! * A query on Contact may select `Account.<field>` for any field of that table (the
//!   relationship name and the field are matched case-insensitively), and a query on Lead
//!   `ConvertedAccount.<field>`: generally, any reference field whose `referenceTo` is
//!   `["Account"]`, by its `relationshipName`. Each relationship renders **once**, as a nested
//!   object keyed by the relationship name in canonical case, at the position of its first
//!   field in the SELECT list, with its own `attributes` and its fields in SELECT order:
//!   `"Account": {"attributes": {"type": "Account", "url":
//!   "/services/data/vXX.X/sobjects/Account/001…"}, "Name": "Acme", "Website":
//!   "https://www.acme.com"}`; `"Account": null` when the reference is null. (Salesforce's
//!   shape; the reference's §2.1 shows only flat records, so this follows Salesforce's query
//!   documentation.) Like other fields, parent values are read when each page is served.
//! * Errors: a relationship no reference field has, or one to an object other than Account
//!   (`Owner.Name`, `CreatedBy.Name`), or a path two levels deep (`Account.Owner.Name`) →
//!   `INVALID_FIELD` "Didn't understand relationship 'X' in field path…" *(choice: Salesforce
//!   accepts the User relationships; the simulator has no User sObject)*; an unknown Account
//!   field → `INVALID_FIELD` "No such column 'X' on entity 'Account'…"; the same parent field
//!   twice → `MALFORMED_QUERY` "duplicate field selected: Account.Name"; an Account
//!   relationship field in WHERE or ORDER BY → `MALFORMED_QUERY` naming the simulator *(not
//!   supported; Salesforce accepts it)*.
//! * Account is not a top-level sObject here *(choice)*: `FROM Account` → `INVALID_TYPE`, and
//!   it has no describe, REST, Collections or Bulk endpoints. Writing `Contact.AccountId` is
//!   validated: an id naming no Account → `INVALID_CROSS_REFERENCE_KEY` (fields
//!   `["AccountId"]`); null or `""` detaches the Contact. [`SalesforceSim::account_ids`] lists
//!   Accounts; [`SalesforceSim::record`] and [`SalesforceSim::field`] read them.
//!
//! ## Sim clock
//! Token sessions, the rolling 24 h allocation, query-locator expiry, authorization-code
//! expiry, JWT `exp` checks, Outbound Message retry schedules and the timestamps of writes use
//! the **sim clock**: the wall clock plus an offset moved forward by
//! [`SalesforceSim::advance`] / `POST /_sim/clock/advance {"seconds":n}`. (A client minting a
//! JWT from its own wall clock after the sim clock was advanced sends an "expired" assertion,
//! as a real client with a slow clock would.) Latency and the Bulk job's state steps
//! ([`SalesforceOptions::bulk_processing_delay`]) pace on real time; a Bulk job's own
//! processing time ([`SalesforceOptions::bulk_job_duration`]) is on the sim clock.
//!
//! ## OAuth (§1)
//! * `GET /services/oauth2/authorize`: unknown `client_id` → 400 HTML page
//!   (`invalid_client_id`); missing or unregistered `redirect_uri` (see
//!   [`SalesforceOptions::callback_urls`]; empty = any absolute URL) → 400 HTML page
//!   (`redirect_uri_mismatch`), no redirect. Otherwise errors redirect with
//!   `error`/`error_description`/`state`: `response_type` other than `code` →
//!   `unsupported_response_type`; a `code_challenge_method` other than `S256` or a challenge
//!   that is not 43 base64url characters → `invalid_request`; a scope outside
//!   [`SalesforceOptions::app_scopes`] → `invalid_scope`. Consent is automatic: `302
//!   redirect_uri?code=aPrx…==&state=…` logging in as the integration user (or the user named
//!   by `login_hint`). No scope → all the app's scopes *(choice: as a connected app's
//!   default)*. Codes are single-use, valid 15 minutes *(choice)*, bound to the redirect URI
//!   and the PKCE challenge. PKCE is optional, as in Salesforce.
//! * `POST /services/oauth2/token` (form body; query parameters also read, as Salesforce
//!   does). Client authentication by `client_id`/`client_secret` or HTTP Basic; a wrong
//!   `client_id` → `invalid_client_id` "client identifier invalid"; a wrong or (when
//!   [`SalesforceOptions::require_client_secret`]) missing secret → `invalid_client` "invalid
//!   client credentials". All token errors are HTTP 400 `{"error","error_description"}`
//!   *(choice: Salesforce uses 400 for these; some deployments answer 401 for client
//!   errors)*.
//!   * `authorization_code`: unknown or used code → `invalid_grant` "invalid authorization
//!     code"; expired → `invalid_grant` "expired authorization code"; `redirect_uri` differing
//!     from the authorize call → `redirect_uri_mismatch`; a challenge was sent and no
//!     `code_verifier` → `invalid_grant`, a verifier that does not match → `invalid_request`
//!     (§1.2), both "invalid code verifier". A failed exchange does not consume the code
//!     *(choice)*. A refresh token is issued only with the `refresh_token` or
//!     `offline_access` scope.
//!   * `refresh_token`: unknown or revoked → `invalid_grant` "expired access/refresh token".
//!     Without rotation the answer has no `refresh_token` (§1.4); with
//!     [`SalesforceOptions::rotate_refresh_tokens`] it carries a new one and the old one is
//!     gone (`invalid_grant` from then on). Earlier access tokens stay valid until they time
//!     out.
//!   * `urn:ietf:params:oauth:grant-type:jwt-bearer` (§1.5): header `alg` must be `RS256`;
//!     the RS256 signature is verified with [`SalesforceOptions::jwt_public_key`] (none
//!     configured → `invalid_client`); `iss` ≠ consumer key → `invalid_client_id`; `aud` ≠
//!     [`SalesforceOptions::jwt_audience`] (default: the login host's base URL, trailing `/`
//!     ignored) → `invalid_grant` "audience is invalid"; `exp` not after now →
//!     `invalid_grant` "expired assertion"; `exp` beyond now + 3 min + 30 s skew →
//!     `invalid_grant`; `sub` not a username of the org → `invalid_grant` "user hasn't
//!     approved this consumer"; a bad signature or malformed token → `invalid_grant` "invalid
//!     assertion". No refresh token in the answer. *(The exact `error_description` strings are
//!     unverified.)*
//!   * `client_credentials` → `invalid_grant` "no client credentials user enabled" (the
//!     simulated app has no Run-As user); other grants → `unsupported_grant_type`.
//!   * The answer has exactly §1.3's fields: `access_token` (`<org15>!AQ…`), `refresh_token`
//!     (when issued), `signature` = Base64(HMAC-SHA256(consumer secret, `id` + `issued_at`)),
//!     `scope`, `id_token` (only with `openid`; unsigned filler), `instance_url`, `id`
//!     (`{login}/id/{org}/{user}`), `token_type: "Bearer"`, `issued_at` (epoch ms as a
//!     string, sim clock). **No `expires_in`.**
//! * Sessions time out [`SalesforceOptions::session_timeout`] (default 2 h) after the **last
//!   API call** made with the token (§1.3), on the sim clock; [`SalesforceSim::expire_sessions`]
//!   expires every access token at once. An expired, revoked or unknown token (or none) →
//!   `401 [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]` with
//!   `WWW-Authenticate: Token`; not counted against the allocation. `Authorization: Bearer` and
//!   the legacy `OAuth` scheme are both accepted.
//! * `POST|GET /services/oauth2/revoke` (`token=`): an access token is revoked alone; a refresh
//!   token revokes every access token issued from it (§1.7) → 200, empty; unknown → 400
//!   `invalid_token`. `introspect` answers `{"active":…}` (client authentication required);
//!   `userinfo` and the identity URL answer the user and org (`urls.rest`, …).
//!
//! ## Query (§2)
//! `GET /services/data/vXX.X/query?q=` and `…/queryAll?q=` (deleted rows only in queryAll)
//! take the SOQL subset of the `soql` module: `SELECT f | Parent.f, … | COUNT() FROM
//! Lead|Contact [WHERE …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET
//! n≤2000]`, conditions with AND/OR/NOT/parentheses (mixing AND and OR unparenthesised is
//! refused, as SOQL does) over `= != <> < <= > >= IN NOT IN LIKE`. `Parent.f` is a parent
//! relationship field (`Account.Name` on Contact; see *Accounts* above). Literals are
//! type-checked against the field: datetimes unquoted (`2024-05-01T12:34:56Z`, `…56.000+0000`,
//! `…56+02:00`; a zone is required; **a literal `+` must be URL-encoded as `%2B`**, otherwise
//! it decodes to a space and the query is malformed, exactly as in Salesforce), strings quoted
//! (compared case-insensitively), ids quoted (15 or 18 characters; compared on the
//! case-sensitive 15-character key), booleans and null bare. Errors, all HTTP 400 with the
//! error array: unknown field → `INVALID_FIELD` "No such column 'X' on entity 'Lead'. If you
//! are attempting to use a custom field…" prefixed with the `ERROR at Row:1:Column:N` locator;
//! relationship paths other than Account parents (`Owner.Name`) → `INVALID_FIELD`; a literal
//! of the wrong type (`SystemModstamp > '2024-…'`) → `INVALID_FIELD` "value of filter
//! criterion for field 'SystemModstamp' must be of type dateTime and should not be enclosed in
//! quotes"; a bad id literal → `INVALID_QUERY_FILTER_OPERATOR`; unknown object →
//! `INVALID_TYPE`; anything unparsable → `MALFORMED_QUERY`. Not supported *(choice)*: child
//! relationship subqueries, relationship fields outside the SELECT list, `FIELDS()`, aggregate
//! functions other than `COUNT()`, GROUP BY, date literals such as `LAST_N_DAYS:n` (→
//! `MALFORMED_QUERY` naming the simulator).
//! * Results: `{"totalSize","done","nextRecordsUrl"?,"records":[{"attributes":{"type","url"},
//!   …fields in SELECT order, canonical case}]}`. Without ORDER BY rows come in Id order
//!   *(choice; Salesforce does not guarantee one)*; equal sort keys are broken by Id.
//! * `Sforce-Query-Options: batchSize=N`: values are clamped to 200..=2000 *(choice: the
//!   reference gives the range, not what happens outside it)*, default 2000; two or more
//!   long-text fields (textarea > 255) in the SELECT cap it at 200. `nextRecordsUrl` is
//!   `/services/data/vXX.X/query/01g…-<offset>`; following it returns the next batch.
//! * The result set is fixed when the query runs (the row list is a snapshot); field values
//!   are read when each page is served *(choice)*. Locators expire after
//!   [`SalesforceOptions::query_locator_ttl`] (15 min) without use, and at most
//!   [`SalesforceOptions::max_open_cursors`] (10) are open per org: an expired, evicted,
//!   unknown or out-of-range locator → 400 `INVALID_QUERY_LOCATOR` "invalid query locator".
//! * Speed: an ordered index on (SystemModstamp, Id) serves `ORDER BY SystemModstamp[, Id]`
//!   queries by a range scan starting at the lower bound the WHERE clause implies (also
//!   through `OR` branches of a keyset condition) and stopping at LIMIT; pages are serialised
//!   by hand.
//! * Describe: `GET /sobjects/{Lead|Contact}/describe` answers the full describe shape
//!   (object attributes, `urls`, `recordTypeInfos`, every visible field with all attributes,
//!   picklist values, `restrictedPicklist`…); `GET /sobjects`, `GET /sobjects/{Type}` and
//!   `GET /sobjects/{Type}/{id}[?fields=…]` are served too. `GET /services/data/` lists versions
//!   without auth and without `Sforce-Limit-Info` (§6.2). Versions below 31.0 → 404.
//!
//! ## Writes (§3)
//! * `PATCH /sobjects/{Type}/{id}` → 204 (`POST …?_HttpMethod=PATCH` works too). A non-id in the path → 404 `NOT_FOUND` "Provided
//!   external ID field does not exist or is not accessible: …" (Salesforce reads it as an
//!   external-id field); an unknown id → 404 `NOT_FOUND`; a deleted record → 404
//!   `ENTITY_IS_DELETED`; a converted Lead → 400 `CANNOT_UPDATE_CONVERTED_LEAD`; field errors
//!   → 400 with every field error in the array (`errorCode`, `message`, `fields`).
//!   `POST /sobjects/{Type}` creates (201 `{"id","success","errors"}`; LastName, and Company
//!   for a Lead, are required).
//! * `PATCH /composite/sobjects` (sObject Collections): ≤ 200 records, else 400
//!   `EXCEEDED_ID_LIMIT` "record limit reached. cannot submit more than 200 records into this
//!   call" *(choice: the reference does not give the error)*; `allOrNone` (default false); HTTP
//!   200 with one result per record in request order: `{"id","success":true,"errors":[]}` or
//!   `{"success":false,"errors":[{"statusCode","message","fields"}]}`. **Failed results carry
//!   no `id`** *(choice, as in the reference's example)*: match results to requests by
//!   position. With `allOrNone: true` and any failure nothing is written; failing records
//!   report their own errors, the others `ALL_OR_NONE_OPERATION_ROLLED_BACK`. Per-record
//!   checks, in order: `attributes.type` missing → `INVALID_TYPE` "Must send a concrete entity
//!   type."; no id → `MISSING_ARGUMENT`; malformed id → `MALFORMED_ID` "malformed id …"; an id
//!   of another object → `MALFORMED_ID`; unknown id → `INVALID_CROSS_REFERENCE_KEY` "invalid
//!   cross reference id"; recycle bin → `ENTITY_IS_DELETED`; converted Lead →
//!   `CANNOT_UPDATE_CONVERTED_LEAD`; injected `FailRecords`; then every field: unknown or
//!   hidden → `INVALID_FIELD` "No such column 'X' on sobject of type Lead" (per record by
//!   default; [`UnknownFieldMode::WholeRequest`] makes it a 400 for the whole request — the
//!   reference does not say which Salesforce does *(choice)*); not updateable →
//!   `INVALID_FIELD_FOR_INSERT_UPDATE`; longer than `length` characters → `STRING_TOO_LONG`
//!   "Label: data value too large: … (max length=N)"; bad email → `INVALID_EMAIL_ADDRESS`;
//!   value outside a restricted picklist → `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`; a
//!   wrongly typed value → `JSON_PARSER_ERROR`; null on a required field →
//!   `REQUIRED_FIELD_MISSING`; an OwnerId that is no user → `INVALID_CROSS_REFERENCE_KEY`.
//!   Duplicate ids in one request are applied in order *(not modelled)*.
//! * **Assignment rules** (§3.1): with [`SalesforceOptions::assignment_rule_active`] (default)
//!   a Lead update or create over REST/Collections **without** `Sforce-Auto-Assign: FALSE`
//!   (header absent, `TRUE`, or a rule id) reassigns the Lead to the next sales rep in
//!   round-robin order (never the current owner), overriding an OwnerId in the same write.
//!   Contacts are never reassigned. Bulk API 2.0 runs the rule only when the job names an
//!   `assignmentRuleId` (the header does not apply to Bulk). Every reassignment is recorded in
//!   [`SalesforceStats::owner_changes`] and the record's history.
//! * Every write call records its `Sforce-Call-Options` `client=`, `Sforce-Auto-Assign` and
//!   `Sforce-Duplicate-Rule-Header` values in the statistics, and every applied record write
//!   is kept in a per-record history ([`SalesforceSim::history`]: when, which user, which
//!   client, via what, which fields changed from what to what, owner reassignment), so tests
//!   can check that enrichd's own writes are recognisable. Duplicate rules are not simulated
//!   (`DUPLICATES_DETECTED` can be injected with `FailRecords`).
//!
//! ## Limits (§6)
//! * Every answer under `/services/data/vXX.X/` carries `Sforce-Limit-Info:
//!   api-usage=N/M`, N counting this call. The daily allocation
//!   ([`SalesforceOptions::daily_api_requests`], default 100,000; changeable with
//!   [`SalesforceSim::set_daily_limit`] / `PUT /_sim/limits`) is a **rolling 24 h** window
//!   (§6.4) on the sim clock. Counted: every authenticated API call that is not refused for
//!   the limit — queries, each locator page, describe, `/limits` itself, writes (a Collections
//!   call is one call whatever its size), every Bulk call (create, upload, close, poll,
//!   results). Not counted: 401s, 403 limit refusals, OAuth, `/services/data/`, `/_sim`. At the
//!   allocation a call is refused with `403 [{"message":"TotalRequests Limit
//!   exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]` *(choice: blocking exactly at Max; the
//!   real soft limit may allow some overage)*. Bulk records also use `DailyBulkApiBatches`
//!   (one per started 10,000 records of a job).
//! * `GET /limits`: `DailyApiRequests`, `DailyBulkApiBatches`, … with `Max`/`Remaining`.
//! * Concurrent long-running requests ([`SalesforceOptions::long_running`]): when the latency
//!   is at least the threshold, every call is long-running; beyond `max` in flight → 403
//!   `REQUEST_LIMIT_EXCEEDED` "ConcurrentRequests (Concurrent API Requests) Limit exceeded."
//!   (not counted against the daily allocation).
//! * `DailyBulkApiBatches` ([`SalesforceOptions::daily_bulk_batches`]): one batch per started
//!   10,000 rows a job processed, rolling 24 h on the sim clock. With the allocation used up,
//!   `POST /jobs/ingest` → 400 `[{"errorCode":"EXCEEDEDQUOTA","message":"ExceededQuota : The job
//!   or batch you tried to create exceeds the allowed number for the past 24-hour period…"}]`
//!   *(choice: the Bulk error code is `ExceededQuota`; the reference gives neither the status
//!   nor the REST shape)*.
//! * [`SalesforceOptions::latency`] is slept on every API call (401 and 403 answers too).
//!
//! ## Bulk API 2.0 ingest (§3.6)
//! `POST /jobs/ingest` (`object` Lead|Contact, `operation` update|insert — others answer 400
//! `INVALIDJOB` *(choice)*, `contentType` CSV, `lineEnding` LF|CRLF, `columnDelimiter`
//! COMMA|TAB|PIPE|SEMICOLON|CARET|BACKQUOTE, optional `assignmentRuleId`) → 200 job info
//! (`state: Open`, `contentUrl`). `PUT …/{id}/batches` (`Content-Type: text/csv`) → 201; one
//! upload per job (a second → 400 `BULK_API_ERROR` "Found multiple contents for job…"). `PATCH
//! …/{id}` `{"state":"UploadComplete"}` → the job goes `UploadComplete`, then `InProgress`,
//! then `JobComplete` in the background ([`SalesforceOptions::bulk_processing_delay`] per
//! step, real time, then [`SalesforceOptions::bulk_job_duration`] on the sim clock before the
//! rows are processed); `{"state":"Aborted"}` aborts an `Open`, `UploadComplete` or
//! `InProgress` job: rows not yet processed are listed by `unprocessedrecords/` and never
//! written; a job aborted while its rows were being processed stays `Aborted` and reports
//! what was processed. A header column that is no field fails the whole job
//! (`state: Failed`, `errorMessage: "InvalidBatch : Field name not found : X"`, every row
//! unprocessed); otherwise each row gets the same checks as a Collections record (empty
//! cell = unchanged, `#N/A` = null). [`SalesforceFault::FailBulkJobs`] makes a job process
//! only its first N rows and end `Failed` with the rest unprocessed.
//! [`SalesforceSim::bulk_jobs`] lists every job with its state and row counts.
//! `GET …/{id}` adds `numberRecordsProcessed`, `numberRecordsFailed`, `retries`,
//! `totalProcessingTime`, `errorMessage`. `successfulResults/` (`"sf__Id","sf__Created",<cols>`),
//! `failedResults/` (`"sf__Id","sf__Error",<cols>`, the error as `CODE:message:fields --`) and
//! `unprocessedrecords/` answer CSV. `DELETE …/{id}` deletes a closed job.
//!
//! ## Outbound Messages (§7.1)
//! [`SalesforceOptions::outbound`] holds definitions ([`OutboundConfig`]: object, endpoint URL,
//! fields, "send session id", and the workflow rule's criteria [`OutboundRule`]). A record
//! created or edited — by the API (REST, Collections, Bulk), a [`SalesforceSim::human_edit`],
//! a `/_sim` create or a conversion — queues one notification per matching definition with the
//! field values at that moment. Real workflow criteria see the record and the running user,
//! not HTTP headers, so **enrichd's own API writes fire Outbound Messages too** unless the rule
//! excludes the integration user ([`OutboundRule::exclude_user_ids`]) or requires a change to
//! particular fields ([`OutboundRule::changed_fields`]). A background task POSTs `text/xml;
//! charset=utf-8`, `SOAPAction: ""`, the envelope of §7.1 (OrganizationId, ActionId `04k…`,
//! SessionId (nil unless configured), EnterpriseUrl, PartnerUrl, 1..100 `Notification`s each
//! with `Id` `04l…` and `sObject xsi:type="sf:Lead"` holding `sf:Id` and the fields; null
//! values are omitted *(choice)*). A 200 whose body has an `Ack` element reading `true`
//! acknowledges; anything else (status, body, connection error, timeout
//! [`SalesforceOptions::outbound_timeout`]) schedules a redelivery of the **same notification
//! ids** after [`SalesforceOptions::outbound_retry_base`] (15 s) doubling up to 2 h, on the sim
//! clock; notifications are dropped 24 h after they were queued. [`SalesforceSim::flush_outbound`]
//! / `POST /_sim/outbound/flush` delivers everything pending now (retries included) and waits.
//! [`SalesforceSim::outbound_envelope`] renders a message for a record without queueing it (with
//! an optional forged `OrganizationId`), for tests that POST messages themselves.
//!
//! ## Statistics and faults
//! [`SalesforceSim::stats`] / `GET /_sim/stats` ([`SalesforceStats`]; `?log=true` adds the call
//! log) and `POST /_sim/stats/reset`. [`SalesforceFault::Status`] answers the next N calls under
//! a path prefix with a status and Salesforce's body; [`SalesforceFault::FailRecords`] fails
//! writes of given records per record; [`SalesforceFault::FailBulkJobs`] fails Bulk jobs
//! part-way.
//!
//! ## `/_sim` control endpoints (both hosts)
//! `GET /_sim/stats[?log=true]`, `POST /_sim/stats/reset`, `GET /_sim/clock`, `POST
//! /_sim/clock/advance {"seconds":n}|{"ms":n}`, `GET|PUT /_sim/limits
//! {"daily_api_requests":n}`, `POST /_sim/limits/reset-usage`, `POST /_sim/faults` (a
//! [`SalesforceFault`] as JSON), `DELETE /_sim/faults`, `POST /_sim/sessions/expire`, `POST
//! /_sim/refresh-tokens/revoke`, `GET /_sim/records/{id}`, `GET /_sim/records/{id}/history`,
//! `POST /_sim/records/{id}/edit {"Field":"value",…,"_user":"005…"?}` (a human edit in the UI,
//! as a sales rep by default), `POST /_sim/records/{id}/convert`, `POST
//! /_sim/records/{id}/delete`, `POST /_sim/records/{Lead|Contact} {"Field":"value",…}` (a
//! record created in the UI → `{"id":…}`), `POST /_sim/outbound/flush`, `GET /_sim/outbound`
//! (pending notifications).

mod account;
mod bulk;
mod fields;
mod http;
mod oauth;
mod options;
mod outbound;
mod rest;
mod schema;
mod seed;
mod soql;
mod stats;
mod store;
mod time;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use serde_json::{Map, Value};
use tokio::sync::{Notify, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

pub use bulk::BulkJobView;
pub use options::{
    DuplicateRule, LongRunning, OutboundConfig, OutboundRule, SalesforceFault, SalesforceOptions,
    UnknownFieldMode,
};
pub use schema::Obj as SObject;
pub use seed::{SalesforceData, SeedRecord, SeedSpec, SeedUser};
pub use stats::{OmDelivery, OwnerChange, SalesforceStats, SfCall};
pub use store::{FieldChange, RecordError, SfUser, WriteRecord};
pub use time::sf_datetime;

use crate::hash::splitmix64;
use http::{Ctx, Host};
use schema::Obj;
use store::{Store, Val, WriteCtx};
use time::Clock;

/// Control-plane state.
#[derive(Debug)]
pub(crate) struct Ctl {
    pub stats: SalesforceStats,
    pub faults: Vec<SalesforceFault>,
    /// Record id → (attempts left, statusCode).
    pub fail: std::collections::HashMap<String, (u32, String)>,
    /// Sim times of counted API calls (rolling 24 h).
    pub usage: std::collections::VecDeque<i64>,
    pub daily_max: u64,
    /// (sim time, batches) of Bulk processing.
    pub bulk_usage: std::collections::VecDeque<(i64, u64)>,
    /// Long-running requests in flight.
    pub long_running: u32,
}

pub(crate) struct Shared {
    pub opts: SalesforceOptions,
    pub started: Instant,
    pub clock: Clock,
    pub login_url: String,
    pub instance_url: String,
    seed: u64,
    ctr: AtomicU64,
    store: Mutex<Store>,
    auth: Mutex<oauth::AuthState>,
    ctl: Mutex<Ctl>,
    cursors: Mutex<rest::Cursors>,
    jobs: Mutex<bulk::Jobs>,
    outbox: Mutex<outbound::Queue>,
    notify: Notify,
    pub http: reqwest::Client,
    tasks: Mutex<Vec<AbortHandle>>,
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
    pub(crate) fn auth(&self) -> MutexGuard<'_, oauth::AuthState> {
        lock(&self.auth)
    }
    pub(crate) fn ctl(&self) -> MutexGuard<'_, Ctl> {
        lock(&self.ctl)
    }
    pub(crate) fn cursors(&self) -> MutexGuard<'_, rest::Cursors> {
        lock(&self.cursors)
    }
    pub(crate) fn jobs(&self) -> MutexGuard<'_, bulk::Jobs> {
        lock(&self.jobs)
    }
    pub(crate) fn outbox(&self) -> MutexGuard<'_, outbound::Queue> {
        lock(&self.outbox)
    }
    pub(crate) fn outbound_wake(&self) {
        self.notify.notify_one();
    }
    pub(crate) async fn outbound_notified(&self) {
        self.notify.notified().await;
    }

    fn rand(&self) -> u64 {
        let n = self.ctr.fetch_add(1, Ordering::SeqCst);
        splitmix64(self.seed ^ splitmix64(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// `n` random characters of `[A-Za-z0-9._]`.
    pub(crate) fn token_chars(&self, n: usize) -> String {
        let mut out = String::with_capacity(n);
        let mut v = 0u64;
        let mut bits = 0u32;
        while out.len() < n {
            if bits < 6 {
                v = self.rand();
                bits = 64;
            }
            out.push(char::from(B64URL[(v & 63) as usize]));
            v >>= 6;
            bits -= 6;
        }
        out
    }

    pub(crate) fn track(&self, h: AbortHandle) {
        let mut t = lock(&self.tasks);
        t.retain(|x| !x.is_finished());
        t.push(h);
    }

    fn abort_tasks(&self) {
        for x in lock(&self.tasks).drain(..) {
            x.abort();
        }
    }

    pub(crate) fn record_view(&self, id: &str) -> Option<Map<String, Value>> {
        let st = self.store();
        let version = format!("v{}", self.opts.latest_api_version);
        if let Some(i) = st.accounts.index_of(id) {
            return Some(st.accounts.view(i, &version));
        }
        let (obj, i) = st.locate(id)?;
        Some(st.table(obj).view(i, &version))
    }

    pub(crate) fn history(&self, id: &str) -> Vec<store::WriteRecord> {
        let id18 = time::to_id18(id).unwrap_or_else(|_| id.to_string());
        self.store().history.get(&id18).cloned().unwrap_or_default()
    }

    /// Create a record from validated values; fires Outbound Messages. Returns the id.
    pub(crate) fn create_with(&self, obj: Obj, vals: &[(usize, Val)], ctx: &WriteCtx) -> String {
        let (id, notes) = {
            let mut st = self.store();
            let i = st.create(obj, vals, ctx);
            let id = st.table(obj).recs[i as usize].id.clone();
            let notes = outbound::on_change(self, &st, obj, i, true, &[], ctx.user);
            (id, notes)
        };
        outbound::enqueue(self, notes);
        id
    }

    /// Convert UI values (any JSON; strings for everything is fine) for `obj`.
    fn ui_values(
        &self,
        obj: Obj,
        fields: &[(String, Value)],
        create: bool,
    ) -> Result<Vec<(usize, Val)>, String> {
        let st = self.store();
        let t = st.table(obj);
        let mut out = Vec::new();
        for (k, v) in fields {
            let (fi, val) = t.convert(k, v, create).map_err(|e| e.message)?;
            out.push((fi, val));
        }
        st.check_refs(obj, &out).map_err(|e| e.message)?;
        Ok(out)
    }

    fn ui_user(&self, user: Option<&str>) -> Result<usize, String> {
        match user {
            None => Ok(if self.store().users.len() > 1 { 1 } else { 0 }),
            Some(u) => self
                .store()
                .user_index(u)
                .ok_or_else(|| format!("no user {u}")),
        }
    }

    pub(crate) fn human_edit(
        &self,
        id: &str,
        fields: &[(String, Value)],
        user: Option<&str>,
    ) -> Result<(), String> {
        let user = self.ui_user(user)?;
        let (obj, i) = self.store().locate(id).ok_or("no such record")?;
        if self.store().table(obj).is_converted(i) {
            return Err("cannot reference converted lead".into());
        }
        let vals = self.ui_values(obj, fields, false)?;
        let ctx = WriteCtx {
            user,
            client: None,
            via: "ui",
            assign: false,
            now: self.clock.now_ms(),
        };
        rest::apply_update(self, obj, i, &vals, &ctx);
        Ok(())
    }

    pub(crate) fn create_record(
        &self,
        obj: Obj,
        fields: &[(String, Value)],
    ) -> Result<String, String> {
        let vals = self.ui_values(obj, fields, true)?;
        let missing = self.store().missing_required(obj, &vals);
        if !missing.is_empty() {
            return Err(format!(
                "Required fields are missing: [{}]",
                missing.join(", ")
            ));
        }
        let ctx = WriteCtx {
            user: self.ui_user(None)?,
            client: None,
            via: "create",
            assign: false,
            now: self.clock.now_ms(),
        };
        Ok(self.create_with(obj, &vals, &ctx))
    }

    /// Convert a Lead (IsConverted, ConvertedDate, Status) as a sales rep would.
    pub(crate) fn convert_lead(&self, id: &str) -> Result<(), String> {
        let (obj, i) = self.store().locate(id).ok_or("no such record")?;
        if obj != Obj::Lead {
            return Err("only Leads can be converted".into());
        }
        let now = self.clock.now_ms();
        let (c, cd, status) = {
            let st = self.store();
            let s = st.leads.schema.sys;
            (
                s.is_converted.ok_or("no IsConverted field")?,
                s.converted_date.ok_or("no ConvertedDate field")?,
                st.leads.schema.idx("Status").ok_or("no Status field")?,
            )
        };
        let vals = vec![
            (c, Val::Bool(true)),
            (cd, Val::Date(now.div_euclid(86_400_000))),
            (status, Val::Text("Closed - Converted".into())),
        ];
        let ctx = WriteCtx {
            user: self.ui_user(None)?,
            client: None,
            via: "convert",
            assign: false,
            now,
        };
        rest::apply_update(self, obj, i, &vals, &ctx);
        Ok(())
    }

    /// Move a record to the recycle bin.
    pub(crate) fn delete_record(&self, id: &str) -> Result<(), String> {
        let (obj, i) = self.store().locate(id).ok_or("no such record")?;
        let now = time::to_second(self.clock.now_ms());
        let mut st = self.store();
        let t = st.table_mut(obj);
        let d = t.schema.sys.is_deleted;
        t.recs[i as usize].vals[d] = Val::Bool(true);
        t.set_modstamp(i, now);
        Ok(())
    }
}

/// Start a simulated org holding `data`: a login host and an instance host, both on
/// `127.0.0.1:0`.
pub async fn start_salesforce(
    data: SalesforceData,
    opts: SalesforceOptions,
) -> std::io::Result<SalesforceSim> {
    let login = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let instance = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let login_addr = login.local_addr()?;
    let instance_addr = instance.local_addr()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(instance_addr.port()) << 40);
    let store = Store::build(
        data,
        &opts.username,
        &opts.omit_fields,
        opts.duplicate_rule.as_ref(),
    );
    let daily_max = opts.daily_api_requests;
    let sh = Arc::new(Shared {
        started: Instant::now(),
        clock: Clock::default(),
        login_url: format!("http://{login_addr}"),
        instance_url: format!("http://{instance_addr}"),
        seed: splitmix64(seed),
        ctr: AtomicU64::new(1),
        store: Mutex::new(store),
        auth: Mutex::new(oauth::AuthState::default()),
        ctl: Mutex::new(Ctl {
            stats: SalesforceStats::default(),
            faults: Vec::new(),
            fail: Default::default(),
            usage: Default::default(),
            daily_max,
            bulk_usage: Default::default(),
            long_running: 0,
        }),
        cursors: Mutex::new(rest::Cursors::default()),
        jobs: Mutex::new(bulk::Jobs::default()),
        outbox: Mutex::new(outbound::Queue::default()),
        notify: Notify::new(),
        http,
        tasks: Mutex::new(Vec::new()),
        opts,
    });
    if !sh.opts.outbound.is_empty() {
        let t = tokio::spawn(outbound::run(sh.clone()));
        sh.track(t.abort_handle());
    }
    let mut stops = Vec::new();
    let mut joins = Vec::new();
    for (listener, host) in [(login, Host::Login), (instance, Host::Instance)] {
        let app = Router::new().fallback(http::entry).with_state(Ctx {
            sh: sh.clone(),
            host,
        });
        let (tx, rx) = oneshot::channel::<()>();
        joins.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
        stops.push(tx);
    }
    tracing::debug!(%login_addr, %instance_addr, "salesforce simulator started");
    Ok(SalesforceSim {
        sh,
        login_addr,
        instance_addr,
        stops,
        joins,
    })
}

/// A running simulated org.
pub struct SalesforceSim {
    sh: Arc<Shared>,
    login_addr: SocketAddr,
    instance_addr: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    joins: Vec<JoinHandle<()>>,
}

impl SalesforceSim {
    /// The login host (`http://127.0.0.1:PORT`): OAuth endpoints only.
    pub fn login_url(&self) -> String {
        self.sh.login_url.clone()
    }
    /// The instance host, returned as `instance_url` by the token endpoint.
    pub fn instance_url(&self) -> String {
        self.sh.instance_url.clone()
    }
    /// Same as [`Self::instance_url`] (the data host), for symmetry with the other simulators.
    pub fn base_url(&self) -> String {
        self.instance_url()
    }
    pub fn login_addr(&self) -> SocketAddr {
        self.login_addr
    }
    pub fn instance_addr(&self) -> SocketAddr {
        self.instance_addr
    }
    pub fn options(&self) -> &SalesforceOptions {
        &self.sh.opts
    }
    pub fn org_id(&self) -> &str {
        &self.sh.opts.org_id
    }
    /// `v62.0` (the latest version the org reports).
    pub fn api_version(&self) -> String {
        format!("v{}", self.sh.opts.latest_api_version)
    }
    /// Users: `[0]` is the integration user, then the sales reps.
    pub fn users(&self) -> Vec<SfUser> {
        self.sh.store().users.clone()
    }
    pub fn stats(&self) -> SalesforceStats {
        self.sh.ctl().stats.clone()
    }
    pub fn reset_stats(&self) {
        self.sh.ctl().stats = SalesforceStats::default();
    }

    /// Sim time, epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.sh.clock.now_ms()
    }
    /// Move the sim clock forward.
    pub fn advance(&self, d: Duration) {
        self.sh.clock.advance(d.as_millis() as i64);
        self.sh.outbound_wake();
    }

    /// Change `DailyApiRequests` Max (applies to the next call).
    pub fn set_daily_limit(&self, max: u64) {
        self.sh.ctl().daily_max = max;
    }
    /// Calls counted in the current rolling 24 h window.
    pub fn api_usage(&self) -> u64 {
        let now = self.sh.clock.now_ms();
        self.sh
            .ctl()
            .usage
            .iter()
            .filter(|t| **t > now - 86_400_000)
            .count() as u64
    }

    /// Expire every access token issued so far (refresh tokens stay valid).
    pub fn expire_sessions(&self) {
        self.sh.auth().expire_all();
    }
    /// Revoke every refresh token (access tokens stay valid until they time out).
    pub fn revoke_refresh_tokens(&self) {
        self.sh.auth().revoke_all_refresh();
    }
    /// Whether a refresh token is currently valid.
    pub fn refresh_token_valid(&self, t: &str) -> bool {
        self.sh.auth().refresh_valid(t)
    }
    /// Every live access and refresh token (tests check none reaches a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.sh.auth().tokens()
    }

    pub fn inject(&self, f: SalesforceFault) {
        http::inject(&self.sh, f);
    }
    pub fn clear_faults(&self) {
        let mut c = self.sh.ctl();
        c.faults.clear();
        c.fail.clear();
    }

    /// A record by id (15 or 18 characters): every visible field, as REST renders them.
    pub fn record(&self, id: &str) -> Option<Map<String, Value>> {
        self.sh.record_view(id)
    }
    /// A field of a record as JSON (None: no such record or field).
    pub fn field(&self, id: &str, field: &str) -> Option<Value> {
        self.record(id)?.get(field).cloned().or_else(|| {
            let r = self.record(id)?;
            r.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(field))
                .map(|(_, v)| v.clone())
        })
    }
    /// Ids of an object's records in id order (deleted ones included).
    pub fn ids(&self, obj: SObject) -> Vec<String> {
        self.sh
            .store()
            .table(obj)
            .recs
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }
    /// Lead ids.
    pub fn lead_ids(&self) -> Vec<String> {
        self.ids(Obj::Lead)
    }
    /// Contact ids.
    pub fn contact_ids(&self) -> Vec<String> {
        self.ids(Obj::Contact)
    }
    /// Account ids in id order ([`Self::record`] and [`Self::field`] read Accounts too).
    pub fn account_ids(&self) -> Vec<String> {
        self.sh
            .store()
            .accounts
            .recs
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }
    /// Ids of converted Leads.
    pub fn converted_lead_ids(&self) -> Vec<String> {
        let st = self.sh.store();
        (0..st.leads.recs.len() as u32)
            .filter(|i| st.leads.is_converted(*i))
            .map(|i| st.leads.recs[i as usize].id.clone())
            .collect()
    }
    /// Every Bulk ingest job, oldest first: state, rows uploaded, processed, failed,
    /// unprocessed, `errorMessage`.
    pub fn bulk_jobs(&self) -> Vec<BulkJobView> {
        bulk::views(&self.sh)
    }
    /// The writes applied to a record, oldest first.
    pub fn history(&self, id: &str) -> Vec<WriteRecord> {
        self.sh.history(id)
    }

    /// Edit a record as a user in the Salesforce UI (default: the first sales rep; `user` an
    /// id otherwise): validates like the API, bumps LastModifiedDate/SystemModstamp, no
    /// assignment rule, fires Outbound Messages.
    pub fn human_edit(
        &self,
        id: &str,
        fields: &[(&str, &str)],
        user: Option<&str>,
    ) -> Result<(), String> {
        let f: Vec<(String, Value)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.sh.human_edit(id, &f, user)
    }
    /// Create a record as a user in the UI; fires Outbound Messages. Returns the id.
    pub fn create_record(&self, obj: SObject, fields: &[(&str, &str)]) -> Result<String, String> {
        let f: Vec<(String, Value)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.sh.create_record(obj, &f)
    }
    /// Convert a Lead (IsConverted = true, Status = Closed - Converted).
    pub fn convert_lead(&self, id: &str) -> Result<(), String> {
        self.sh.convert_lead(id)
    }
    /// Move a record to the recycle bin (only queryAll sees it; writes get
    /// `ENTITY_IS_DELETED`).
    pub fn delete_record(&self, id: &str) -> Result<(), String> {
        self.sh.delete_record(id)
    }

    /// Deliver every pending Outbound Message now (retries included) and wait for the
    /// deliveries to finish.
    pub async fn flush_outbound(&self) {
        outbound::flush(&self.sh).await;
    }
    /// A SOAP Outbound Message for record `id` as the first definition for its object would
    /// send it (its fields, or Id/Email/FirstName/LastName/SystemModstamp without one), with a
    /// fresh notification id, **without** queueing it: for tests that POST messages themselves
    /// (a forged `OrganizationId`, a replay). Returns (notification id, XML).
    pub fn outbound_envelope(&self, id: &str, org_id: Option<&str>) -> Option<(String, String)> {
        let st = self.sh.store();
        let (obj, i) = st.locate(id)?;
        let cfg = self
            .sh
            .opts
            .outbound
            .iter()
            .position(|c| Obj::parse(&c.object) == Some(obj));
        let fields: Vec<String> = match cfg {
            Some(k) => self.sh.opts.outbound[k].fields.clone(),
            None => OutboundConfig::new(obj.name(), "").fields,
        };
        let t = st.table(obj);
        let mut vals = vec![("Id".to_string(), Some(t.recs[i as usize].id.clone()))];
        for f in &fields {
            if let Some(fi) = t.schema.idx(f) {
                vals.push((
                    t.schema.def(fi).name.to_string(),
                    t.recs[i as usize].vals[fi].to_plain(),
                ));
            }
        }
        drop(st);
        let nid = {
            let mut q = self.sh.outbox();
            q.next += 1;
            time::make_id("04l", q.next)
        };
        let now = self.sh.clock.now_ms();
        let note = outbound::Note {
            id: nid.clone(),
            config: cfg.unwrap_or(0),
            object: obj,
            fields: vals,
            first_ms: now,
            next_ms: now,
            attempts: 0,
        };
        let mut xml = outbound::envelope(&self.sh, cfg.unwrap_or(0), &[note], None);
        if let Some(org) = org_id {
            xml = xml.replace(
                &format!("<OrganizationId>{}</OrganizationId>", self.sh.opts.org_id),
                &format!("<OrganizationId>{org}</OrganizationId>"),
            );
        }
        Some((nid, xml))
    }

    /// Outbound notifications waiting for (re)delivery.
    pub fn outbound_pending(&self) -> usize {
        self.sh.outbox().pending.len()
    }

    /// Graceful shutdown (at most ~2 s per listener); background tasks are aborted.
    pub async fn shutdown(mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
        for j in self.joins.drain(..) {
            let abort = j.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), j)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.sh.abort_tasks();
    }
}

impl Drop for SalesforceSim {
    fn drop(&mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
        for j in self.joins.drain(..) {
            j.abort();
        }
        self.sh.abort_tasks();
    }
}

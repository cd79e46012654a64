-- One canonical id per client, person, project and contract, with its id in each system.
CREATE TABLE core.id_map (
    canonical_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_type   text        NOT NULL CHECK (entity_type IN ('client', 'person', 'project', 'contract')),
    crm_id        text,
    psa_id        text,
    erp_id        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (crm_id IS NOT NULL OR psa_id IS NOT NULL OR erp_id IS NOT NULL)
);
CREATE UNIQUE INDEX id_map_crm_uq ON core.id_map (entity_type, crm_id) WHERE crm_id IS NOT NULL;
CREATE UNIQUE INDEX id_map_psa_uq ON core.id_map (entity_type, psa_id) WHERE psa_id IS NOT NULL;
CREATE UNIQUE INDEX id_map_erp_uq ON core.id_map (entity_type, erp_id) WHERE erp_id IS NOT NULL;
COMMENT ON TABLE core.id_map IS
    'Cross-system id map: one canonical id per entity with its CRM, PSA and ERP ids (each unique per entity type).';

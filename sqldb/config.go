package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/configschema"
)

// ConfigService implements herd.ConfigService.
type ConfigService struct{ db *DB }

var _ herd.ConfigService = (*ConfigService)(nil)

// NewConfigService returns a ConfigService on db.
func NewConfigService(db *DB) *ConfigService { return &ConfigService{db: db} }

// seesTenantWide reports whether the actor may read a tenant-wide object
// (a config profile, a firmware) of tenantID: a super-admin, or a user of
// the tenant holding any grant in it. A ThingsBoard device profile or an
// AWS IoT job document is readable by whoever manages devices of the
// account; a user with no grant at all sees nothing of the tenant.
func seesTenantWide(a *herd.Actor, tenantID int64) bool {
	return a.SeesTenant(tenantID) && (a.Super || len(a.Grants) > 0)
}

// checkPage refuses a limit out of range.
func checkPage(limit int) (int, error) {
	if limit < 1 || limit > herd.MaxConfigPageLimit {
		return 0, herd.Errorf(herd.EINVALIDLIMIT, "limit must be between 1 and %d", herd.MaxConfigPageLimit)
	}
	return limit, nil
}

const profileColumns = `id, tenant_id, name, schema, latest_version, created_at`

func scanProfile(sc rowScanner) (*herd.ConfigProfile, error) {
	var p herd.ConfigProfile
	var schema string
	var created int64
	if err := sc.Scan(&p.ID, &p.TenantID, &p.Name, &schema, &p.LatestVersion, &created); err != nil {
		return nil, err
	}
	p.Schema, p.CreatedAt = json.RawMessage(schema), msToTime(created)
	return &p, nil
}

// CreateConfigProfile implements herd.ConfigService.
func (s *ConfigService) CreateConfigProfile(ctx context.Context, p *herd.ConfigProfile) (err error) {
	defer wrapOp("sqldb.CreateConfigProfile", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := p.Validate(); err != nil {
		return err
	} else if _, err := configschema.Compile(p.Schema); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.requireTenantAdmin(ctx, a, p.TenantID); err != nil {
		return err
	}
	p.LatestVersion, p.CreatedAt = 0, tx.now
	p.ID, err = tx.insertID(ctx, `INSERT INTO config_profiles (tenant_id, name, schema, latest_version, created_at) VALUES (?, ?, ?, 0, ?)`, p.TenantID, p.Name, string(p.Schema), tx.now.UnixMilli())
	if err != nil {
		return formatError(err, "the tenant has a config profile of this name already")
	}
	root, err := tx.rootPath(ctx, p.TenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, p.TenantID, newEvent(herd.EventConfigProfileCreated, herd.EventSubjectConfigProfile, p.ID, root, p)); err != nil {
		return err
	}
	return tx.Commit()
}

// FindConfigProfileByID implements herd.ConfigService.
func (s *ConfigService) FindConfigProfileByID(ctx context.Context, id int64) (_ *herd.ConfigProfile, err error) {
	defer wrapOp("sqldb.FindConfigProfileByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigProfile, error) { return tx.findProfile(ctx, a, id) })
}

func (tx *Tx) findProfile(ctx context.Context, a *herd.Actor, id int64) (*herd.ConfigProfile, error) {
	cond, args := tenantCond(a, "tenant_id")
	p, err := scanProfile(tx.QueryRowContext(ctx, `SELECT `+profileColumns+` FROM config_profiles WHERE id = ?`+cond, append([]any{id}, args...)...))
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !seesTenantWide(a, p.TenantID)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "config profile %d not found", id)
	}
	return p, err
}

// FindConfigProfiles implements herd.ConfigService.
func (s *ConfigService) FindConfigProfiles(ctx context.Context, tenantID, after int64, limit int) (_ *herd.ConfigPage[*herd.ConfigProfile], err error) {
	defer wrapOp("sqldb.FindConfigProfiles", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigPage[*herd.ConfigProfile], error) {
		if tenantID == 0 && !a.Super {
			tenantID = a.TenantID
		}
		limit, err := checkPage(limit)
		if err != nil {
			return nil, err
		} else if !seesTenantWide(a, tenantID) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+profileColumns+` FROM config_profiles WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?`, tenantID, after, limit+1)
		if err != nil {
			return nil, err
		}
		return collectPage(rows, limit, scanProfile, func(p *herd.ConfigProfile) int64 { return p.ID })
	})
}

// collectPage reads up to limit rows (the query asked for one more, to
// know whether there is a next page) into a page.
func collectPage[T any](rows *sql.Rows, limit int, scan func(rowScanner) (T, error), key func(T) int64) (*herd.ConfigPage[T], error) {
	defer rows.Close()
	page := &herd.ConfigPage[T]{Items: []T{}}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		if len(page.Items) == limit {
			page.Next = key(page.Items[limit-1])
			break
		}
		page.Items = append(page.Items, v)
	}
	return page, rows.Err()
}

func scanVersion(sc rowScanner) (*herd.ConfigVersion, error) {
	var v herd.ConfigVersion
	var doc string
	var created int64
	if err := sc.Scan(&v.ProfileID, &v.TenantID, &v.Version, &doc, &created); err != nil {
		return nil, err
	}
	v.Document, v.CreatedAt = json.RawMessage(doc), msToTime(created)
	return &v, nil
}

// CreateConfigVersion implements herd.ConfigService.
func (s *ConfigService) CreateConfigVersion(ctx context.Context, v *herd.ConfigVersion) (err error) {
	defer wrapOp("sqldb.CreateConfigVersion", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	p, err := tx.findProfile(ctx, a, v.ProfileID)
	if err != nil {
		return err
	} else if err := tx.requireTenantAdmin(ctx, a, p.TenantID); err != nil {
		return err
	} else if err := configschema.Validate(p.Schema, v.Document); err != nil {
		return err
	}
	// The counter's UPDATE locks the profile's row: concurrent creates
	// take numbers one after the other.
	if err := tx.QueryRowContext(ctx, `UPDATE config_profiles SET latest_version = latest_version + 1 WHERE id = ? AND tenant_id = ? RETURNING latest_version`, p.ID, p.TenantID).Scan(&v.Version); err != nil {
		return err
	}
	v.TenantID, v.CreatedAt = p.TenantID, tx.now
	if _, err := tx.ExecContext(ctx, `INSERT INTO config_versions (tenant_id, profile_id, version, document, created_at) VALUES (?, ?, ?, ?, ?)`, v.TenantID, v.ProfileID, v.Version, string(v.Document), tx.now.UnixMilli()); err != nil {
		return err
	}
	root, err := tx.rootPath(ctx, p.TenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, p.TenantID, newEvent(herd.EventConfigVersionCreated, herd.EventSubjectConfigProfile, p.ID, root, v)); err != nil {
		return err
	}
	return tx.Commit()
}

// FindConfigVersion implements herd.ConfigService.
func (s *ConfigService) FindConfigVersion(ctx context.Context, profileID, version int64) (_ *herd.ConfigVersion, err error) {
	defer wrapOp("sqldb.FindConfigVersion", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigVersion, error) {
		p, err := tx.findProfile(ctx, a, profileID)
		if err != nil {
			return nil, err
		}
		return tx.findVersion(ctx, p.TenantID, p.ID, version)
	})
}

func (tx *Tx) findVersion(ctx context.Context, tenantID, profileID, version int64) (*herd.ConfigVersion, error) {
	v, err := scanVersion(tx.QueryRowContext(ctx, `SELECT profile_id, tenant_id, version, document, created_at FROM config_versions WHERE tenant_id = ? AND profile_id = ? AND version = ?`, tenantID, profileID, version))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, herd.Errorf(herd.ENOTFOUND, "config profile %d has no version %d", profileID, version)
	}
	return v, err
}

// FindConfigVersions implements herd.ConfigService.
func (s *ConfigService) FindConfigVersions(ctx context.Context, profileID, after int64, limit int) (_ *herd.ConfigPage[*herd.ConfigVersion], err error) {
	defer wrapOp("sqldb.FindConfigVersions", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigPage[*herd.ConfigVersion], error) {
		limit, err := checkPage(limit)
		if err != nil {
			return nil, err
		}
		p, err := tx.findProfile(ctx, a, profileID)
		if err != nil {
			return nil, err
		}
		rows, err := tx.QueryContext(ctx, `SELECT profile_id, tenant_id, version, document, created_at FROM config_versions WHERE tenant_id = ? AND profile_id = ? AND version > ? ORDER BY version LIMIT ?`, p.TenantID, p.ID, after, limit+1)
		if err != nil {
			return nil, err
		}
		return collectPage(rows, limit, scanVersion, func(v *herd.ConfigVersion) int64 { return v.Version })
	})
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// FirmwareService implements herd.FirmwareService.
type FirmwareService struct{ db *DB }

var _ herd.FirmwareService = (*FirmwareService)(nil)

// NewFirmwareService returns a FirmwareService on db.
func NewFirmwareService(db *DB) *FirmwareService { return &FirmwareService{db: db} }

const firmwareColumns = `id, tenant_id, model, version, url, sha256, size, created_at`

func scanFirmware(sc rowScanner) (*herd.Firmware, error) {
	var f herd.Firmware
	var created int64
	if err := sc.Scan(&f.ID, &f.TenantID, &f.Model, &f.Version, &f.URL, &f.SHA256, &f.Size, &created); err != nil {
		return nil, err
	}
	f.CreatedAt = msToTime(created)
	return &f, nil
}

// CreateFirmware implements herd.FirmwareService.
func (s *FirmwareService) CreateFirmware(ctx context.Context, f *herd.Firmware) (err error) {
	defer wrapOp("sqldb.CreateFirmware", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := f.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.requireTenantAdmin(ctx, a, f.TenantID); err != nil {
		return err
	}
	f.CreatedAt = tx.now
	f.ID, err = tx.insertID(ctx, `INSERT INTO firmware (tenant_id, model, version, url, sha256, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		f.TenantID, f.Model, f.Version, f.URL, f.SHA256, f.Size, tx.now.UnixMilli())
	if err != nil {
		return formatError(err, "the tenant has this version of this model's firmware already")
	}
	root, err := tx.rootPath(ctx, f.TenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, f.TenantID, newEvent(herd.EventFirmwareCreated, herd.EventSubjectFirmware, f.ID, root, f)); err != nil {
		return err
	}
	return tx.Commit()
}

// FindFirmwareByID implements herd.FirmwareService.
func (s *FirmwareService) FindFirmwareByID(ctx context.Context, id int64) (_ *herd.Firmware, err error) {
	defer wrapOp("sqldb.FindFirmwareByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Firmware, error) {
		cond, args := tenantCond(a, "tenant_id")
		f, err := scanFirmware(tx.QueryRowContext(ctx, `SELECT `+firmwareColumns+` FROM firmware WHERE id = ?`+cond, append([]any{id}, args...)...))
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !seesTenantWide(a, f.TenantID)) {
			return nil, herd.Errorf(herd.ENOTFOUND, "firmware %d not found", id)
		}
		return f, err
	})
}

// FindFirmware implements herd.FirmwareService.
func (s *FirmwareService) FindFirmware(ctx context.Context, tenantID int64, model string, after int64, limit int) (_ *herd.ConfigPage[*herd.Firmware], err error) {
	defer wrapOp("sqldb.FindFirmware", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigPage[*herd.Firmware], error) {
		if tenantID == 0 && !a.Super {
			tenantID = a.TenantID
		}
		limit, err := checkPage(limit)
		if err != nil {
			return nil, err
		} else if err := herd.CheckText("model", model, herd.MaxModelLen); err != nil {
			return nil, err
		} else if !seesTenantWide(a, tenantID) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
		}
		q, args := `SELECT `+firmwareColumns+` FROM firmware WHERE tenant_id = ? AND id > ?`, []any{tenantID, after}
		if model != "" {
			q, args = q+` AND model = ?`, append(args, model)
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY id LIMIT ?`, append(args, limit+1)...)
		if err != nil {
			return nil, err
		}
		return collectPage(rows, limit, scanFirmware, func(f *herd.Firmware) int64 { return f.ID })
	})
}
